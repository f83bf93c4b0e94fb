"""Decisions: opening one with its job's transition, the first permitted answer winning by a conditional
UPDATE, quorum votes, and what each kind of answer does to its job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.database import Database
from store.errors import DecisionClosed, DecisionNotFound, InvalidAnswer
from store.models import Decision, DecisionOption, DecisionSpec, Job, Notification
from store.schema import decision_votes, decisions, jobs
from store.states import AnswerSource, DecisionKind, DecisionState, JobState
from store.trail import event_row, insert_events, insert_notifications
from store.transitions import row_as_dict, row_to_job, transition

#: Free-text answers ("Other…") are kept to what a Slack modal can hold.
MAX_FREE_TEXT = 3000

APPROVE, REJECT, CHANGES = "approve", "reject", "changes"
REVIEW_OPTIONS = [
    DecisionOption(value=APPROVE, label="Approve", style="primary"),
    DecisionOption(value=REJECT, label="Reject", style="danger"),
    DecisionOption(value=CHANGES, label="Request changes"),
]
RAISE, STOP = "raise", "stop"
BUDGET_OPTIONS = [
    DecisionOption(value=RAISE, label="Raise the budget", style="primary"),
    DecisionOption(value=STOP, label="Stop the job", style="danger", confirm="Cancel this job?"),
]


class Answered(BaseModel):
    """What an answer did: the decision as it now stands and its job."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    job: Job
    counted_votes: int = 1  # for a quorum: how many agree so far


def row_to_decision(row: sa.Row[Any]) -> Decision:
    return Decision.model_validate(row_as_dict(row))


async def open_decision(
    conn: AsyncConnection,
    job: Job,
    spec: DecisionSpec,
    *,
    at: datetime,
    channel: str | None,
    source_state: DecisionState = DecisionState.OPEN,
    answer: dict[str, Any] | None = None,
) -> Decision:
    """Write a decision for a job (or return the one already under that key) and queue its message."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values: dict[str, Any] = {
        "job_id": job.id,
        "key": spec.key,
        "kind": spec.kind.value,
        "question": spec.question,
        "options": [option.model_dump() for option in spec.options],
        "allow_other": spec.allow_other,
        "default": spec.default,
        "risk": spec.risk,
        "answerers": spec.answerers.model_dump(),
        "details": spec.details or None,
        "quorum": spec.answerers.quorum,
        "state": source_state.value,
        "created_at": at,
        "timeout_at": at + timedelta(seconds=spec.timeout_s),
        "channel": channel,
        **(answer or {}),
    }
    inserted = await conn.execute(
        insert(decisions).values(**values).on_conflict_do_nothing().returning(decisions.c.id)
    )
    is_new = inserted.first() is not None
    row = (
        await conn.execute(
            sa.select(decisions).where(decisions.c.job_id == job.id, decisions.c.key == spec.key)
        )
    ).one()
    decision = row_to_decision(row)
    if not is_new:  # a replayed run reaching the same open decision: already in the trail and posted
        return decision
    await insert_events(
        conn,
        [
            event_row(
                job.id,
                at=at,
                actor=f"job:{job.id}",
                kind="decision_opened",
                decision_id=decision.id,
                reason=spec.question,
                details={"key": spec.key, "options": decision.option_values},
            )
        ],
    )
    if decision.state is DecisionState.OPEN:
        await insert_notifications(
            conn,
            [
                Notification(
                    kind="decision.opened",
                    dedup_key=f"decision:{decision.id}:opened",
                    target=channel,
                    payload={"decision_id": decision.id, "job_id": job.id, "kind": decision.kind.value},
                    job_id=job.id,
                    decision_id=decision.id,
                )
            ],
            at,
        )
    return decision


def check_value(decision: Decision, value: str) -> str:
    """The value to record, or InvalidAnswer naming the choices."""
    if value in decision.option_values:
        return value
    text = value.strip()
    if decision.allow_other and text and len(text) <= MAX_FREE_TEXT:
        return text
    choices = ", ".join(decision.option_values)
    raise InvalidAnswer(f"{value!r} is not an option of {decision.ref} (choose one of: {choices})")


class DecisionsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, decision_id: int) -> Decision:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(decisions).where(decisions.c.id == decision_id))).first()
        if row is None:
            raise DecisionNotFound(decision_id)
        return row_to_decision(row)

    async def for_job(self, job_id: int) -> list[Decision]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(decisions).where(decisions.c.job_id == job_id).order_by(decisions.c.id)
            )
            return [row_to_decision(row) for row in result]

    async def open(self, *, limit: int = 100) -> list[Decision]:
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(decisions)
                .where(decisions.c.state == DecisionState.OPEN.value)
                .order_by(decisions.c.id)
                .limit(limit)
            )
            return [row_to_decision(row) for row in result]

    async def set_message(self, decision_id: int, *, channel: str, ts: str) -> None:
        """Remember where the decision's message was posted, so its outcome updates that message."""
        async with self.db.write() as conn:
            await conn.execute(
                decisions.update().where(decisions.c.id == decision_id).values(channel=channel, message_ts=ts)
            )

    async def open_for_job(self, job_id: int) -> Decision | None:
        """The job's newest open decision, if any."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(decisions)
                    .where(decisions.c.job_id == job_id, decisions.c.state == DecisionState.OPEN.value)
                    .order_by(decisions.c.id.desc())
                    .limit(1)
                )
            ).first()
        return row_to_decision(row) if row is not None else None

    async def open_now(self, job: Job, spec: DecisionSpec, *, channel: str | None) -> Decision:
        """Open a decision outside a run's end (e.g. a budget raise offered on escalation)."""
        async with self.db.write() as conn:
            return await open_decision(conn, job, spec, at=clock.now(), channel=channel)

    async def record_auto_answer(
        self, job: Job, spec: DecisionSpec, value: str, *, rule: str, channel: str | None
    ) -> Decision:
        """Write a decision already answered by an auto-answer rule (no message, no wait)."""
        at = clock.now()
        async with self.db.write() as conn:
            return await open_decision(
                conn,
                job,
                spec,
                at=at,
                channel=channel,
                source_state=DecisionState.ANSWERED,
                answer={
                    "answer": value,
                    "answered_by": f"rule:{rule}",
                    "answer_source": AnswerSource.AUTO_RULE.value,
                    "answered_at": at,
                },
            )

    async def answer(
        self,
        decision_id: int,
        value: str,
        *,
        actor: str,
        source: AnswerSource = AnswerSource.HUMAN,
        comment: str | None = None,
    ) -> Answered:
        """Record an answer if the decision is still open: the first one wins; later ones raise
        DecisionClosed naming who answered what. With a quorum, a vote counts until enough agree."""
        at = clock.now()
        async with self.db.write() as conn:
            return await answer_in(
                conn, decision_id, value, actor=actor, source=source, comment=comment, at=at
            )

    async def expire_due(self, *, limit: int = 200) -> list[Answered]:
        """Close decisions past their timeout: with a default the default is recorded as the answer
        (source timeout_default); without one the decision expires and its job is escalated."""
        at = clock.now()
        pick = (
            sa.select(decisions.c.id)
            .where(decisions.c.state == DecisionState.OPEN.value, decisions.c.timeout_at <= at)
            .order_by(decisions.c.timeout_at)
            .limit(limit)
        )
        if self.db.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        outcomes: list[Answered] = []
        async with self.db.write() as conn:
            for decision_id in (await conn.execute(pick)).scalars().all():
                decision = await _lock_decision(conn, decision_id)
                if decision.state is not DecisionState.OPEN:
                    continue
                if decision.default is not None and decision.default in decision.option_values:
                    outcomes.append(
                        await answer_in(
                            conn,
                            decision_id,
                            decision.default,
                            actor="timeout",
                            source=AnswerSource.TIMEOUT_DEFAULT,
                            comment=None,
                            at=at,
                        )
                    )
                else:
                    outcomes.append(await _expire(conn, decision, at))
        return outcomes


async def _lock_decision(conn: AsyncConnection, decision_id: int) -> Decision:
    query = sa.select(decisions).where(decisions.c.id == decision_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise DecisionNotFound(decision_id)
    return row_to_decision(row)


async def _job(conn: AsyncConnection, job_id: int) -> Job:
    return row_to_job((await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).one())


async def answer_in(
    conn: AsyncConnection,
    decision_id: int,
    value: str,
    *,
    actor: str,
    source: AnswerSource,
    comment: str | None,
    at: datetime,
) -> Answered:
    decision = await _lock_decision(conn, decision_id)
    if decision.state is not DecisionState.OPEN:
        raise DecisionClosed(decision.id, decision.state.value, decision.answer, decision.answered_by)
    value = check_value(decision, value)
    if decision.quorum > 1 and source is AnswerSource.HUMAN:
        votes = await _vote(conn, decision, actor, value, at)
        if votes < decision.quorum:
            return Answered(decision=decision, job=await _job(conn, decision.job_id), counted_votes=votes)
    closed = await conn.execute(
        decisions.update()
        .where(decisions.c.id == decision_id, decisions.c.state == DecisionState.OPEN.value)
        .values(
            state=DecisionState.ANSWERED.value,
            answer=value,
            comment=comment,
            answered_by=actor,
            answer_source=source.value,
            answered_at=at,
        )
        .returning(*decisions.c)
    )
    row = closed.first()
    if row is None:
        raise DecisionClosed(decision.id, "answered", None, None)
    decision = row_to_decision(row)
    await insert_events(
        conn,
        [
            event_row(
                decision.job_id,
                at=at,
                actor=actor,
                kind="decision_answered",
                decision_id=decision.id,
                reason=comment,
                details={"answer": value, "source": source.value},
            )
        ],
    )
    await insert_notifications(conn, [_closed_note(decision)], at)
    job = await _apply_answer(conn, decision, at)
    return Answered(decision=decision, job=job)


def _closed_note(decision: Decision) -> Notification:
    return Notification(
        kind="decision.closed",
        dedup_key=f"decision:{decision.id}:closed",
        target=decision.channel,
        payload={
            "decision_id": decision.id,
            "state": decision.state.value,
            "answer": decision.answer,
            "answered_by": decision.answered_by,
            "source": decision.answer_source,
        },
        job_id=decision.job_id,
        decision_id=decision.id,
    )


async def _vote(conn: AsyncConnection, decision: Decision, voter: str, value: str, at: datetime) -> int:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(decision_votes).values(decision_id=decision.id, voter=voter, value=value, at=at)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["decision_id", "voter"], set_={"value": value, "at": at}
        )
    )
    await insert_events(
        conn,
        [
            event_row(
                decision.job_id,
                at=at,
                actor=voter,
                kind="decision_vote",
                decision_id=decision.id,
                details={"answer": value},
            )
        ],
    )
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(decision_votes)
        .where(decision_votes.c.decision_id == decision.id, decision_votes.c.value == value)
    )
    return int(count or 0)


async def _apply_answer(conn: AsyncConnection, decision: Decision, at: datetime) -> Job:
    """What the answer does to the job, by the decision's kind."""
    job = await _job(conn, decision.job_id)
    actor = decision.answered_by or "unknown"
    moved: Job | None = None
    if decision.kind is DecisionKind.ASK and job.state is JobState.WAITING_DECISION:
        moved, _ = await transition(
            conn,
            job.id,
            JobState.READY,
            at=at,
            actor=actor,
            kind="resumed",
            decision_id=decision.id,
            from_states=[JobState.WAITING_DECISION],
            values={"run_after": at},
        )
    elif decision.kind is DecisionKind.REVIEW and job.state is JobState.NEEDS_REVIEW:
        moved = await _apply_review(conn, decision, job, actor, at)
    elif decision.kind is DecisionKind.BUDGET and job.state is JobState.ESCALATED:
        if decision.answer == RAISE:
            raised = max(job.budget_usd or 0.0, job.spend_usd) * 2 or 1.0
            moved, _ = await transition(
                conn,
                job.id,
                JobState.READY,
                at=at,
                actor=actor,
                kind="budget_raised",
                decision_id=decision.id,
                values={"budget_usd": raised, "run_after": at},
                details={"budget_usd": raised},
            )
        else:
            moved, _ = await transition(
                conn,
                job.id,
                JobState.CANCELLED,
                at=at,
                actor=actor,
                decision_id=decision.id,
                reason="stopped at its budget",
            )
    return moved or job


async def _apply_review(conn: AsyncConnection, decision: Decision, job: Job, actor: str, at: datetime) -> Job:
    if decision.answer == APPROVE:
        moved, _ = await transition(
            conn, job.id, JobState.COMPLETED, at=at, actor=actor, kind="approved", decision_id=decision.id
        )
    elif decision.answer == REJECT:
        moved, _ = await transition(
            conn,
            job.id,
            JobState.REJECTED,
            at=at,
            actor=actor,
            decision_id=decision.id,
            reason=decision.comment or "rejected in review",
        )
    else:
        feedback = [*job.feedback, decision.comment or decision.answer or ""]
        moved, _ = await transition(
            conn,
            job.id,
            JobState.READY,
            at=at,
            actor=actor,
            kind="changes_requested",
            decision_id=decision.id,
            reason=decision.comment,
            values={"feedback": feedback, "run_after": at, "result": None},
        )
    return moved


async def _expire(conn: AsyncConnection, decision: Decision, at: datetime) -> Answered:
    closed = await conn.execute(
        decisions.update()
        .where(decisions.c.id == decision.id, decisions.c.state == DecisionState.OPEN.value)
        .values(state=DecisionState.EXPIRED.value, answered_at=at)
        .returning(*decisions.c)
    )
    decision = row_to_decision(closed.one())
    await insert_events(
        conn,
        [
            event_row(
                decision.job_id, at=at, actor="timeout", kind="decision_expired", decision_id=decision.id
            )
        ],
    )
    await insert_notifications(conn, [_closed_note(decision)], at)
    job = await _job(conn, decision.job_id)
    if job.state in (JobState.WAITING_DECISION, JobState.NEEDS_REVIEW):
        job, _ = await transition(
            conn,
            job.id,
            JobState.ESCALATED,
            at=at,
            actor="timeout",
            decision_id=decision.id,
            reason=f"{decision.ref} timed out with no default",
        )
    return Answered(decision=decision, job=job)


__all__: Sequence[str] = ["APPROVE", "CHANGES", "REJECT", "Answered", "DecisionsRepo", "open_decision"]
