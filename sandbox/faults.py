"""Rate limits and server errors: injected on demand by tests, or steady per-method limits (Slack tiers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from sandbox.workspace import Clock, SlackError

ANY_METHOD = "*"


@dataclass
class Injected:
    """The next `remaining` calls of a method fail with this status (429 carries `Retry-After`)."""

    status: int
    remaining: int
    error: str
    retry_after: int | None = None
    #: the method runs and only its answer is lost (a gateway error or timeout after Slack acted)
    after_running: bool = False


@dataclass(frozen=True)
class SteadyLimit:
    """A token bucket: `per_minute` calls refill steadily, `burst` may be spent at once.

    With `per_channel` each channel has its own bucket (Slack's ~1 message per second per channel).
    """

    per_minute: float
    burst: int = 1
    per_channel: bool = False


# Slack's published tiers, for a sandbox that should behave like a busy real workspace.
SLACK_LIMITS: Mapping[str, SteadyLimit] = {
    "chat.postMessage": SteadyLimit(60, burst=5, per_channel=True),
    "chat.update": SteadyLimit(50, burst=10),
    "conversations.open": SteadyLimit(50, burst=10),
    "views.publish": SteadyLimit(100, burst=20),
    "views.open": SteadyLimit(100, burst=20),
    "views.update": SteadyLimit(100, burst=20),
    "chat.postEphemeral": SteadyLimit(100, burst=20),
    "users.info": SteadyLimit(100, burst=20),
}


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class Faults:
    """Decides, before a method runs, whether Slack would refuse the call with a 429 or a 5xx."""

    clock: Clock
    steady: dict[str, SteadyLimit] = field(default_factory=dict)
    injected: dict[str, list[Injected]] = field(default_factory=dict)
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` ("*" for any) answer 429 with `Retry-After: retry_after`."""
        self._inject(method, Injected(429, times, "ratelimited", retry_after))

    def fail(self, method: str, *, times: int = 1, status: int = 500, error: str = "fatal_error") -> None:
        """The next `times` calls of `method` ("*" for any) answer HTTP `status` with `error`."""
        self._inject(method, Injected(status, times, error))

    def lose_response(self, method: str, *, times: int = 1, status: int = 503) -> None:
        """The next `times` calls of `method` run, but the caller gets HTTP `status` instead of the answer:
        the case where a retry must not do the thing twice."""
        self._inject(method, Injected(status, times, "service_unavailable", after_running=True))

    def limit(self, method: str, limit: SteadyLimit | None) -> None:
        """Set (or with None remove) a steady limit for `method`."""
        if limit is None:
            self.steady.pop(method, None)
        else:
            self.steady[method] = limit
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if key[0] != method}

    def check(self, method: str, channel: str | None) -> None:
        """Raise the SlackError Slack would answer instead of running the method, if any."""
        self._raise_injected(method, after_running=False)
        steady = self.steady.get(method)
        if steady is not None:
            self._take(method, steady, channel)

    def check_answer(self, method: str) -> None:
        """After the method ran: raise the error that replaces its answer, if one was injected."""
        self._raise_injected(method, after_running=True)

    def _raise_injected(self, method: str, *, after_running: bool) -> None:
        for key in (method, ANY_METHOD):
            queue = [i for i in self.injected.get(key, []) if i.after_running == after_running]
            if queue:
                injection = queue[0]
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self.injected[key].remove(injection)
                raise _error(injection.status, injection.error, injection.retry_after)

    def _inject(self, method: str, injection: Injected) -> None:
        if injection.remaining > 0:
            self.injected.setdefault(method, []).append(injection)

    def _take(self, method: str, limit: SteadyLimit, channel: str | None) -> None:
        key = (method, (channel or "") if limit.per_channel else "")
        now = self.clock()
        rate = limit.per_minute / 60.0
        bucket = self._buckets.setdefault(key, _Bucket(float(limit.burst), now))
        bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        raise _error(429, "ratelimited", max(1, math.ceil((1.0 - bucket.tokens) / rate)))


def _error(status: int, error: str, retry_after: int | None) -> SlackError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return SlackError(error, status=status, headers=headers)
