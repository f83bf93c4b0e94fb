"""Turning what a handler returned or raised into the RunEnd the store writes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from bot.outcomes import BudgetExceeded, Complete, JobFailure, RateLimited, Review
from store import clock
from store.decisions import BUDGET_OPTIONS, REVIEW_OPTIONS
from store.models import AnswererPolicy, DecisionSpec, Job, NewJob, RunEnd
from store.states import DecisionKind, FailureClass, JobState

if TYPE_CHECKING:
    from bot.context import JobContext

#: How long a budget decision waits before the job stays escalated for a person to act on.
BUDGET_DECISION_TIMEOUT_S = 86400.0
#: Longest reason kept on the job (the trail keeps the rest in details).
MAX_REASON_CHARS = 2000


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    json.dumps(value)  # raises TypeError for what the database could not store
    return value


def _short(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def completed(ctx: JobContext, returned: Any) -> RunEnd:
    """A handler returned: a result, a Complete, or a Review proposal."""
    job = ctx.job
    base = {"job_id": job.id, "run_seq": job.run_seq, "actor": ctx.worker}
    if isinstance(returned, Review):
        spec = DecisionSpec(
            key=f"review:{job.run_seq}",
            kind=DecisionKind.REVIEW,
            question=returned.question,
            options=REVIEW_OPTIONS,
            timeout_s=returned.timeout_s,
            answerers=ctx.job_type.answerers or AnswererPolicy(),
            details={"summary": returned.summary, "why": returned.why, **returned.details},
        )
        return RunEnd(
            **base,
            to_state=JobState.NEEDS_REVIEW,
            event_kind="proposed",
            result=_jsonable(returned.proposal),
            reason=returned.why,
            decision=spec,
            decision_channel=ctx.decision_channel,
            details={"summary": returned.summary},
        )
    result = _jsonable(returned.result if isinstance(returned, Complete) else returned)
    return RunEnd(
        **base,
        to_state=JobState.COMPLETED,
        event_kind="completed",
        result=result,
        children=chained_children(ctx, result),
    )


def chained_children(ctx: JobContext, result: Any) -> list[NewJob]:
    """Follow-up jobs from the type's `next` list, fed the parent's result. A child whose input does not
    fit waits in pending with the reason, rather than being lost."""
    children = []
    for name in ctx.job_type.next:
        payload = result if isinstance(result, dict) else {"result": result}
        try:
            children.append(
                ctx.engine.new_job(
                    name, payload, owner=ctx.job.owner, channel=ctx.job.channel, parent_id=ctx.job.id
                )
            )
        except Exception as exc:
            lane = ctx.engine.types.get(name).lane if name in ctx.engine.types else ctx.job.lane
            children.append(
                NewJob(
                    type=name,
                    lane=lane,
                    input=payload,
                    parent_id=ctx.job.id,
                    owner=ctx.job.owner,
                    channel=ctx.job.channel,
                    state=JobState.PENDING,
                    reason=_short(f"missing input: {exc}"),
                )
            )
    return children


def failed(ctx: JobContext, error: BaseException) -> RunEnd:
    """A handler raised: pick the state for its failure class. The job (and so Slack) gets the reason cut to
    MAX_REASON_CHARS; a longer one is kept whole in the trail, in the event's details."""
    job = ctx.job
    now = clock.now()
    base = {"job_id": job.id, "run_seq": job.run_seq, "actor": ctx.worker}
    if isinstance(error, JobFailure):
        klass, reason = error.failure_class, error.reason
    elif isinstance(error, ctx.job_type.fatal_exceptions):
        klass, reason = FailureClass.FATAL, f"{type(error).__name__}: {error}"
    elif isinstance(error, ValidationError):
        klass, reason = (
            FailureClass.MISSING_INPUT,
            f"input no longer fits {job.type}: {error.error_count()} errors",
        )
    else:
        klass, reason = FailureClass.TRANSIENT, f"{type(error).__name__}: {error}"
    full = reason or klass.value
    reason = _short(full)
    whole = {"full_reason": full} if reason != full else {}
    common = {**base, "failure_class": klass, "reason": reason, "event_kind": klass.value}
    if klass is FailureClass.TRANSIENT:
        failures = job.attempts + 1
        if failures >= job.max_attempts:
            return RunEnd(
                **{**common, "event_kind": "retries_exhausted"},
                to_state=JobState.DEAD,
                spend_attempt=True,
                details={**whole, "attempts": failures},
            )
        delay_s = ctx.job_type.retry.delay_s(failures)
        return RunEnd(
            **common,
            to_state=JobState.RETRY_SCHEDULED,
            spend_attempt=True,
            run_after=now + timedelta(seconds=delay_s),
            details={**whole, "attempt": failures, "retry_in_s": round(delay_s, 3)},
        )
    if isinstance(error, RateLimited):
        until = now + timedelta(seconds=error.retry_after_s)
        return RunEnd(
            **common,
            to_state=JobState.READY,
            run_after=until,
            lane_cooldown_until=until,
            lane=job.lane,
            details={**whole, "retry_after_s": error.retry_after_s},
        )
    if isinstance(error, BudgetExceeded):
        spec = DecisionSpec(
            key=f"budget:{job.run_seq}",
            kind=DecisionKind.BUDGET,
            question=f"{job.ref} hit its budget: {reason}",
            options=BUDGET_OPTIONS,
            timeout_s=BUDGET_DECISION_TIMEOUT_S,
        )
        return RunEnd(
            **common,
            to_state=JobState.ESCALATED,
            decision=spec,
            decision_channel=ctx.decision_channel,
            details=whole or None,
        )
    target = {
        FailureClass.MISSING_INPUT: JobState.PENDING,
        FailureClass.POLICY_BLOCK: JobState.BLOCKED,
        FailureClass.AMBIGUOUS: JobState.ESCALATED,
        FailureClass.FATAL: JobState.DEAD,
    }[klass]
    return RunEnd(**common, to_state=target, details=whole or None)


def waiting(ctx: JobContext, spec: DecisionSpec) -> RunEnd:
    """ctx.ask opened a decision: the run ends and the job waits without holding a slot."""
    job = ctx.job
    return RunEnd(
        job_id=job.id,
        run_seq=job.run_seq,
        actor=ctx.worker,
        to_state=JobState.WAITING_DECISION,
        event_kind="asked",
        reason=spec.question,
        decision=spec,
        decision_channel=ctx.decision_channel,
    )


def abandoned(job: Job, worker: str, reason: str) -> RunEnd:
    """The worker shuts down mid-run: the job goes back to ready with no attempt spent."""
    return RunEnd(
        job_id=job.id,
        run_seq=job.run_seq,
        actor=worker,
        to_state=JobState.READY,
        event_kind="released",
        reason=reason,
        run_after=clock.now(),
    )


def unstorable(end: RunEnd) -> RunEnd:
    """The database refused a run's ending (a result it cannot store): the job dies saying so."""
    return RunEnd(
        job_id=end.job_id,
        run_seq=end.run_seq,
        actor=end.actor,
        to_state=JobState.DEAD,
        event_kind="outcome_unstorable",
        failure_class=FailureClass.FATAL,
        reason=f"the run ended ({end.to_state.value}) but its outcome could not be stored",
    )
