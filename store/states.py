"""The job and decision states, and the one table of allowed job transitions."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life. Terminal states are listed last."""

    #: waiting for a dependency, a brief or missing input
    PENDING = "pending"
    #: can be claimed once `run_after` has passed
    READY = "ready"
    #: a worker holds it and heartbeats
    RUNNING = "running"
    #: the agent asked a question; its slot is free again
    WAITING_DECISION = "waiting_decision"
    #: the agent proposes an output; a human approves it
    NEEDS_REVIEW = "needs_review"
    #: a transient failure; it runs again after backoff
    RETRY_SCHEDULED = "retry_scheduled"
    #: it hit an authority boundary or a policy block
    BLOCKED = "blocked"
    #: a human must decide what happens next
    ESCALATED = "escalated"
    #: held by the kill switch, a paused lane or type, or by hand
    PAUSED = "paused"
    #: done
    COMPLETED = "completed"
    #: its proposed output was rejected in review
    REJECTED = "rejected"
    #: dead letter: retries exhausted or not retryable
    DEAD = "dead"
    #: its deadline passed before it finished
    EXPIRED = "expired"
    #: stopped by a human or a stop rule
    CANCELLED = "cancelled"


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.REJECTED, JobState.DEAD, JobState.EXPIRED, JobState.CANCELLED}
)
OPEN_STATES: frozenset[JobState] = frozenset(JobState) - TERMINAL_STATES

_S = JobState
#: The only job transitions the store performs; every UPDATE checks its source state against this table.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.PENDING: frozenset({_S.READY, _S.PAUSED, _S.CANCELLED, _S.EXPIRED}),
    _S.READY: frozenset({_S.RUNNING, _S.PAUSED, _S.CANCELLED, _S.EXPIRED}),
    _S.RUNNING: frozenset(
        {
            _S.COMPLETED,
            _S.NEEDS_REVIEW,
            _S.WAITING_DECISION,
            _S.RETRY_SCHEDULED,
            _S.PENDING,
            _S.BLOCKED,
            _S.ESCALATED,
            _S.READY,  # reaped orphan, rate-limited, or replayed after an instant answer
            _S.DEAD,
            _S.PAUSED,
            _S.CANCELLED,
            _S.EXPIRED,
        }
    ),
    _S.WAITING_DECISION: frozenset({_S.READY, _S.ESCALATED, _S.CANCELLED, _S.EXPIRED}),
    _S.NEEDS_REVIEW: frozenset({_S.COMPLETED, _S.REJECTED, _S.READY, _S.ESCALATED, _S.CANCELLED, _S.EXPIRED}),
    _S.RETRY_SCHEDULED: frozenset({_S.READY, _S.PAUSED, _S.CANCELLED, _S.EXPIRED}),
    _S.BLOCKED: frozenset({_S.READY, _S.CANCELLED, _S.DEAD, _S.EXPIRED}),
    _S.ESCALATED: frozenset({_S.READY, _S.CANCELLED, _S.DEAD, _S.EXPIRED}),
    _S.PAUSED: frozenset({_S.READY, _S.CANCELLED, _S.EXPIRED}),
    _S.COMPLETED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.DEAD: frozenset({_S.READY}),  # re-queued by a human
    _S.EXPIRED: frozenset({_S.READY}),
    _S.CANCELLED: frozenset({_S.READY}),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states from which `target` may be reached."""
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


class DecisionState(StrEnum):
    """Where a decision is in its life."""

    #: waiting for an answer
    OPEN = "open"
    #: answered by a person, a rule or the timeout default
    ANSWERED = "answered"
    #: its timeout passed with no default; the job was escalated
    EXPIRED = "expired"
    #: closed because its job ended or was cancelled
    CANCELLED = "cancelled"


class DecisionKind(StrEnum):
    """What answering a decision does to its job."""

    #: a question an agent asked with `ctx.ask`; the answer lets the job run again
    ASK = "ask"
    #: a proposed output; approve completes, reject rejects, changes runs it again with feedback
    REVIEW = "review"
    #: a budget was hit; raise lets the job run on with a larger budget, stop cancels it
    BUDGET = "budget"


class AnswerSource(StrEnum):
    """Who produced a decision's answer."""

    #: a person clicked or typed it
    HUMAN = "human"
    #: the decision timed out and its default was recorded
    TIMEOUT_DEFAULT = "timeout_default"
    #: an auto-answer rule answered a low-risk decision
    AUTO_RULE = "auto_rule"


class FailureClass(StrEnum):
    """Why a run ended without an output."""

    #: worth trying again after backoff
    TRANSIENT = "transient"
    #: the input lacks something; the job waits in pending
    MISSING_INPUT = "missing_input"
    #: an authority boundary or policy stopped it
    POLICY_BLOCK = "policy_block"
    #: the agent cannot tell what to do; a human must
    AMBIGUOUS = "ambiguous"
    #: an upstream said slow down; the lane cools down, no attempt spent
    RATE_LIMITED = "rate_limited"
    #: a budget was exceeded
    BUDGET_EXCEEDED = "budget_exceeded"
    #: not worth retrying
    FATAL = "fatal"


class Priority(StrEnum):
    """P0 is the most urgent."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"

    @property
    def rank(self) -> int:
        """The sort key stored in the database (lower runs first)."""
        return int(self.value[1])

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return cls(f"P{rank}")
