"""What a job handler can return or raise: one outcome per run, one class per kind of failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.models import DecisionSpec
from store.states import FailureClass


@dataclass(frozen=True)
class Complete:
    """The job is done; `result` is kept as its result (JSON)."""

    result: Any = None


@dataclass(frozen=True)
class Review:
    """The agent proposes an output that a person approves, rejects or sends back with feedback."""

    proposal: Any
    summary: str = ""
    why: str = "needs a human's approval"
    question: str = "Approve this output?"
    timeout_s: float = 86400.0
    details: dict[str, Any] = field(default_factory=dict)


class JobFailure(Exception):
    """Base of the failures a handler raises; each maps to one state."""

    failure_class: FailureClass = FailureClass.TRANSIENT

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(JobFailure):
    """Worth another try after backoff (an unexpected exception counts as this too)."""

    failure_class = FailureClass.TRANSIENT


class MissingInput(JobFailure):
    """The input lacks something a person must supply; the job waits in pending."""

    failure_class = FailureClass.MISSING_INPUT


class PolicyBlocked(JobFailure):
    """An authority boundary or a policy stopped the job; it waits in blocked."""

    failure_class = FailureClass.POLICY_BLOCK


class Ambiguous(JobFailure):
    """The agent cannot tell what to do; a person decides (escalated)."""

    failure_class = FailureClass.AMBIGUOUS


class FatalError(JobFailure):
    """Not worth retrying: the job goes to dead at once."""

    failure_class = FailureClass.FATAL


class RateLimited(JobFailure):
    """An upstream asked to slow down: the lane cools down and the job runs again after `retry_after_s`,
    without spending an attempt."""

    failure_class = FailureClass.RATE_LIMITED

    def __init__(self, retry_after_s: float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.retry_after_s = max(0.0, retry_after_s)


class BudgetExceeded(JobFailure):
    """A spend cap was hit: the job is escalated with a decision offering to raise its budget."""

    failure_class = FailureClass.BUDGET_EXCEEDED


class JobStopped(Exception):
    """The job was cancelled, paused, expired or reaped while this run held it; the run must end."""


class DecisionPending(Exception):
    """Raised by `ctx.ask` to end the run until the decision is answered (durable decisions)."""

    def __init__(self, spec: DecisionSpec) -> None:
        super().__init__(spec.key)
        self.spec = spec
