"""Frozen domain objects that leave the store; ORM rows and SQL never do."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from store.states import AnswerSource, DecisionKind, DecisionState, FailureClass, JobState, Priority


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


def job_ref(job_id: int) -> str:
    return f"Q-{job_id}"


def decision_ref(decision_id: int) -> str:
    return f"D-{decision_id}"


class Job(Frozen):
    """One unit of work and where it stands."""

    id: int
    type: str
    lane: str
    priority: Priority
    input: dict[str, Any]
    owner: str | None
    channel: str | None
    idempotency_key: str | None
    state: JobState
    attempts: int
    max_attempts: int
    run_seq: int
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    claimed_by: str | None
    deadline_at: datetime | None
    sla_at: datetime | None
    sla_level: int
    sla_next_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    spend_usd: float
    budget_usd: float | None
    parent_id: int | None
    result: Any
    reason: str | None
    failure_class: FailureClass | None
    feedback: list[str] = Field(default_factory=list)
    finished_at: datetime | None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_from_rank(cls, value: Any) -> Any:
        return Priority.from_rank(value) if isinstance(value, int) else value

    @field_validator("feedback", mode="before")
    @classmethod
    def _feedback_default(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def ref(self) -> str:
        return job_ref(self.id)


class NewJob(Frozen):
    """A job about to be written; the engine fills it from the job type and the caller."""

    type: str
    lane: str
    priority: Priority = Priority.P1
    input: dict[str, Any]
    owner: str | None = None
    channel: str | None = None
    idempotency_key: str | None = None
    max_attempts: int = 5
    run_after: datetime | None = None
    deadline_at: datetime | None = None
    sla_at: datetime | None = None
    parent_id: int | None = None
    budget_usd: float | None = None
    state: Literal[JobState.READY, JobState.PAUSED, JobState.PENDING] = JobState.READY
    reason: str | None = None


class DecisionOption(Frozen):
    """One button: the value recorded when chosen and the label shown."""

    value: str = Field(min_length=1, max_length=150)
    label: str = Field(min_length=1, max_length=75)
    style: Literal["primary", "danger"] | None = None
    confirm: str | None = None  # text of a confirm dialog shown before the click counts


class AnswererPolicy(Frozen):
    """Who may answer a decision. Empty users and groups with owner/admins false and anyone false means
    nobody but admins can (admins are never locked out)."""

    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    owner: bool = True
    admins: bool = True
    anyone: bool = False
    quorum: int = Field(default=1, ge=1, le=20)


class DecisionSpec(Frozen):
    """A decision about to be opened."""

    key: str = Field(min_length=1, max_length=200)
    kind: DecisionKind = DecisionKind.ASK
    question: str = Field(min_length=1)
    options: list[DecisionOption] = Field(min_length=1, max_length=10)
    allow_other: bool = False
    default: str | None = None
    risk: Literal["low", "medium", "high"] | None = None
    answerers: AnswererPolicy = AnswererPolicy()
    timeout_s: float = Field(default=1800.0, ge=60.0, le=86400.0)
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def option_values(self) -> list[str]:
        return [option.value for option in self.options]


class Decision(Frozen):
    id: int
    job_id: int
    key: str
    kind: DecisionKind
    question: str
    options: list[DecisionOption]
    allow_other: bool
    default: str | None
    risk: str | None
    answerers: AnswererPolicy
    details: dict[str, Any] | None
    quorum: int
    state: DecisionState
    answer: str | None
    comment: str | None
    answered_by: str | None
    answer_source: AnswerSource | None
    created_at: datetime
    timeout_at: datetime
    answered_at: datetime | None
    channel: str | None
    message_ts: str | None

    @property
    def ref(self) -> str:
        return decision_ref(self.id)

    @property
    def option_values(self) -> list[str]:
        return [option.value for option in self.options]


class Event(Frozen):
    """One entry of a job's evidence trail."""

    id: int
    job_id: int
    decision_id: int | None
    at: datetime
    actor: str
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    reason: str | None
    details: dict[str, Any] | None


class Notification(Frozen):
    """A message for people, written to the outbox in the transaction that caused it."""

    kind: str
    dedup_key: str
    target: str | None
    payload: dict[str, Any]
    job_id: int | None = None
    decision_id: int | None = None


class OutboxItem(Frozen):
    id: int
    dedup_key: str
    kind: str
    job_id: int | None
    decision_id: int | None
    target: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    response: dict[str, Any] | None
    error: str | None


class RunEnd(Frozen):
    """How one run of a job ended, and everything that ending writes in its transaction."""

    job_id: int
    run_seq: int
    to_state: JobState
    actor: str
    event_kind: str
    result: Any = None
    reason: str | None = None
    failure_class: FailureClass | None = None
    run_after: datetime | None = None
    spend_attempt: bool = False
    details: dict[str, Any] | None = None
    decision: DecisionSpec | None = None
    decision_channel: str | None = None
    notifications: list[Notification] = Field(default_factory=list)
    children: list[NewJob] = Field(default_factory=list)
    lane_cooldown_until: datetime | None = None
    lane: str | None = None

    @property
    def is_plain_completion(self) -> bool:
        """Completions with nothing else to write take the batched fast path."""
        return (
            self.to_state is JobState.COMPLETED
            and self.decision is None
            and not self.notifications
            and not self.children
            and self.lane_cooldown_until is None
        )


class Answer(Frozen):
    """A decision's outcome as an agent sees it."""

    value: str
    by: str
    source: AnswerSource
    comment: str | None = None

    @property
    def is_default(self) -> bool:
        """True when nobody answered and the timeout default was used."""
        return self.source is AnswerSource.TIMEOUT_DEFAULT
