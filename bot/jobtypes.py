"""Job types are code: the `job_type` decorator, their policies, and the registry that finds them."""

from __future__ import annotations

import importlib
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bot.durations import parse_duration_s
from store.errors import ConfigError, UnknownJobType
from store.models import AnswererPolicy
from store.states import Priority

if TYPE_CHECKING:
    from bot.context import JobContext

Handler = Callable[["JobContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter for transient failures."""

    max_attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0
    #: each delay is scaled by a random factor in [1 - jitter, 1 + jitter] so retries do not stampede
    jitter: float = 0.2

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait before the run after the `failures`-th failure (1-based)."""
        base = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, failures - 1))
        spread: float = (rng or random).uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0
        return max(0.0, min(self.max_delay_s, base * spread))


@dataclass(frozen=True)
class Budget:
    """Spend caps in USD; None leaves the cap to queuebot.toml."""

    per_run_usd: float | None = None
    per_job_usd: float | None = None
    per_day_usd: float | None = None


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Handler
    input: type[BaseModel]
    lane: str = "normal"
    priority: Priority = Priority.P1
    sla_s: float | None = None
    deadline_s: float | None = None
    owner: str | None = None
    channel: str | None = None
    may: frozenset[str] = frozenset()
    retry: Retry = Retry()
    next: tuple[str, ...] = ()
    budget: Budget = Budget()
    cron: str | None = None
    answerers: AnswererPolicy | None = None
    #: exceptions that are not worth retrying (dead at once) rather than transient
    fatal_exceptions: tuple[type[BaseException], ...] = ()
    description: str = ""


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def add(self, job_type: JobType) -> None:
        existing = self._types.get(job_type.name)
        if existing is not None and existing.handler is not job_type.handler:
            raise ConfigError(f"job type {job_type.name!r} is defined twice")
        self._types[job_type.name] = job_type

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(name, list(self._types)) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Any:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types


#: The registry the decorator fills; the runtime and CLI read it.
registry = Registry()


def job_type(
    name: str,
    *,
    input: type[BaseModel],
    lane: str = "normal",
    priority: Priority | str = Priority.P1,
    sla: str | float | None = None,
    deadline: str | float | None = None,
    owner: str | None = None,
    channel: str | None = None,
    may: Iterable[str] = (),
    retry: Retry = Retry(),
    next: Iterable[str] = (),
    budget: Budget = Budget(),
    cron: str | None = None,
    answerers: AnswererPolicy | None = None,
    fatal_exceptions: tuple[type[BaseException], ...] = (),
    into: Registry | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a job type: its input model, lane, priority, SLA, deadline, owner, authority (`may`), retry
    policy, follow-up types (`next`), budget and optional cron schedule."""

    def register(handler: Handler) -> Handler:
        (into or registry).add(
            JobType(
                name=name,
                handler=handler,
                input=input,
                lane=lane,
                priority=Priority(priority),
                sla_s=parse_duration_s(sla) if sla is not None else None,
                deadline_s=parse_duration_s(deadline) if deadline is not None else None,
                owner=owner,
                channel=channel,
                may=frozenset(may),
                retry=retry,
                next=tuple(next),
                budget=budget,
                cron=cron,
                answerers=answerers,
                fatal_exceptions=fatal_exceptions,
                description=(handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else "",
            )
        )
        return handler

    return register


def load_job_modules(modules: Iterable[str]) -> None:
    """Import the modules that define job types (queuebot.toml `job_modules`); the built-in examples and
    the `command` type are always loaded."""
    for module in ("bot.examples", "bot.command_agent", *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import job module {module!r}: {exc}") from exc
