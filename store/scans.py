"""The queries behind the time rules. Each picks due rows (SKIP LOCKED on PostgreSQL) and changes them with
conditional UPDATEs, so two processes running the same scan at once never act on one item twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import floor
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.counts import add_finished, forget_empty, key_for
from store.database import Database, picked_ids
from store.errors import InvalidTransition
from store.jobs import NOTIFY_CHANNEL
from store.models import Job, Notification
from store.schema import OPEN_CLAUSE, TERMINAL_CLAUSE, decisions, events, jobs, markers, outbox
from store.states import TERMINAL_STATES, JobState
from store.trail import event_row, insert_events, insert_notifications
from store.transitions import row_to_job, transition

T = TypeVar("T")


class Ladder(BaseModel):
    """One job's escalation ladder: for each level, seconds after the SLA and who hears of it."""

    model_config = ConfigDict(frozen=True)

    levels: list[tuple[float, list[str]]]
    repeat_every_s: float | None = None

    def due_level(self, overdue_s: float) -> int:
        """How many levels (counting repeats) are due this long after the SLA."""
        due = sum(1 for after, _ in self.levels if after <= overdue_s)
        if self.repeat_every_s and self.levels and due == len(self.levels):
            due += floor((overdue_s - self.levels[-1][0]) / self.repeat_every_s)
        return due

    def levels_between(self, told: int, due: int) -> list[int]:
        """The levels to notify when a job told up to `told` is due at `due`: each ladder step passed over,
        and of the repeats past the top only the latest."""
        steps = list(range(told + 1, min(due, len(self.levels)) + 1))
        if due > len(self.levels) and due not in steps:
            steps.append(due)
        return steps

    def targets(self, level: int) -> list[str]:
        return self.levels[min(level, len(self.levels)) - 1][1]

    def next_after_s(self, level: int) -> float | None:
        """Seconds after the SLA when the level after `level` falls due, if any."""
        if level < len(self.levels):
            return self.levels[level][0]
        if self.repeat_every_s and self.levels:
            return self.levels[-1][0] + (level - len(self.levels) + 1) * self.repeat_every_s
        return None


class ScansRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _pick(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=True) if self.db.is_postgres else query

    async def reap_orphans(self, *, heartbeat_timeout_s: float, limit: int = 500) -> list[Job]:
        """Running jobs whose worker stopped heartbeating go back to ready (an attempt spent), or to dead
        when they are out of attempts."""
        batches = await _until_drained(lambda: self._reap_batch(heartbeat_timeout_s, limit), limit)
        return [job for batch in batches for job in batch]

    async def _reap_batch(self, heartbeat_timeout_s: float, limit: int) -> tuple[list[int], list[Job]]:
        now = clock.now()
        stale = now - timedelta(seconds=heartbeat_timeout_s)
        pick = self._pick(
            sa.select(jobs)
            .where(jobs.c.state == JobState.RUNNING.value, jobs.c.heartbeat_at < stale)
            .limit(limit)
        )
        reaped: list[Job] = []
        async with self.db.write() as conn:
            picked = [row_to_job(row) for row in await conn.execute(pick)]
            for job in picked:
                out_of_attempts = job.attempts + 1 >= job.max_attempts
                target = JobState.DEAD if out_of_attempts else JobState.READY
                try:
                    moved, _ = await transition(
                        conn,
                        job.id,
                        target,
                        at=now,
                        actor="reaper",
                        kind="reaped",
                        reason=f"worker {job.claimed_by} stopped heartbeating",
                        run_seq=job.run_seq,
                        from_states=[JobState.RUNNING],
                        values={"attempts": job.attempts + 1, "run_after": now, "failure_class": "transient"},
                    )
                except InvalidTransition:
                    continue
                reaped.append(moved)
            await _notify_lanes(conn, {job.lane for job in reaped if job.state is JobState.READY})
        return [job.id for job in picked], reaped

    async def promote_due_retries(self, *, limit: int = 1000) -> int:
        """Jobs whose backoff has passed become ready."""
        return sum(await _until_drained(lambda: self._promote_batch(limit), limit))

    async def _promote_batch(self, limit: int) -> tuple[list[int], int]:
        now = clock.now()
        pick = (
            sa.select(jobs.c.id)
            .where(jobs.c.state == JobState.RETRY_SCHEDULED.value, jobs.c.run_after <= now)
            .limit(limit)
        )
        async with self.db.write() as conn:
            result = await conn.execute(
                jobs.update()
                .where(picked_ids(pick, self.db.dialect), jobs.c.state == JobState.RETRY_SCHEDULED.value)
                .values(state=JobState.READY.value, updated_at=now)
                .returning(jobs.c.id, jobs.c.lane)
            )
            rows = result.all()
            await insert_events(
                conn,
                [
                    event_row(
                        row.id,
                        at=now,
                        actor="scheduler",
                        kind="retry_due",
                        from_state=JobState.RETRY_SCHEDULED,
                        to_state=JobState.READY,
                    )
                    for row in rows
                ],
            )
            await _notify_lanes(conn, {row.lane for row in rows})
        return [row.id for row in rows], len(rows)

    async def expire_past_deadline(self, *, limit: int = 500) -> list[Job]:
        """Open jobs past their deadline become expired; their owners are told."""
        batches = await _until_drained(lambda: self._expire_batch(limit), limit)
        return [job for batch in batches for job in batch]

    async def _expire_batch(self, limit: int) -> tuple[list[int], list[Job]]:
        now = clock.now()
        pick = self._pick(
            sa.select(jobs.c.id)
            .where(jobs.c.deadline_at.is_not(None), sa.text(OPEN_CLAUSE), jobs.c.deadline_at <= now)
            .limit(limit)
        )
        expired: list[Job] = []
        async with self.db.write() as conn:
            picked = list((await conn.execute(pick)).scalars())
            for job_id in picked:
                try:
                    job, _ = await transition(
                        conn,
                        job_id,
                        JobState.EXPIRED,
                        at=now,
                        actor="scheduler",
                        reason="deadline passed",
                        values={"claimed_by": None},
                    )
                except InvalidTransition:
                    continue
                expired.append(job)
        return picked, expired

    async def escalate_overdue(self, ladder_for: Callable[[Job], Ladder], *, limit: int = 500) -> int:
        """Climb the escalation ladder of overdue jobs: each level's people are told once (dedup key per
        job, level and person); acknowledging stops it."""
        return sum(await _until_drained(lambda: self._escalate_batch(ladder_for, limit), limit))

    async def _escalate_batch(self, ladder_for: Callable[[Job], Ladder], limit: int) -> tuple[list[int], int]:
        now = clock.now()
        pick = self._pick(
            sa.select(jobs.c.id)
            .where(jobs.c.sla_next_at.is_not(None), jobs.c.sla_next_at <= now)
            .limit(limit)
        )
        climbed = _Climbed()
        async with self.db.write() as conn:
            ids = list((await conn.execute(pick)).scalars())
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids)))).all() if ids else []
            for job in map(row_to_job, rows):
                await _climb(conn, job, ladder_for(job), now, climbed)
            # The batch's trail and notes go in two statements, not two a job: bursts are the common case.
            await insert_events(conn, climbed.events)
            await insert_notifications(conn, climbed.notes, now)
        return ids, len(climbed.notes)

    async def prune_finished(self, *, older_than_s: float, limit: int = 5000) -> int:
        """Delete finished jobs (and their trail, decisions, markers and sent notes) past retention; they
        leave the finished counts too."""
        before = clock.now() - timedelta(seconds=older_than_s)
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    sa.select(jobs.c.id, jobs.c.lane, jobs.c.state, jobs.c.finished_at)
                    .where(sa.text(TERMINAL_CLAUSE), jobs.c.finished_at < before)
                    .limit(limit)
                )
            ).all()
            if not rows:
                return 0
            ids = [row.id for row in rows]
            for table in (events, markers, outbox):
                await conn.execute(table.delete().where(table.c.job_id.in_(ids)))
            await conn.execute(decisions.delete().where(decisions.c.job_id.in_(ids)))
            await conn.execute(jobs.delete().where(jobs.c.id.in_(ids)))
            gone = Counter(key_for(row.lane, JobState(row.state), row.finished_at) for row in rows)
            await add_finished(conn, {key: -n for key, n in gone.items()})
            await forget_empty(conn)
        return len(rows)

    async def last_activity(self) -> datetime | None:
        """None while any job is ready, running or retrying; else when the queue last saw work finish or
        start waiting."""
        busy = (JobState.READY, JobState.RUNNING, JobState.RETRY_SCHEDULED)
        # One look-up per state and per side of history, so each uses its partial index.
        async with self.db.read() as conn:
            active = await conn.scalar(
                sa.select(sa.or_(*(sa.exists().where(jobs.c.state == state.value) for state in busy)))
            )
            if active:
                return None
            last_open = await conn.scalar(
                sa.select(sa.func.max(jobs.c.updated_at)).where(sa.text(OPEN_CLAUSE))
            )
            last_finished = await conn.scalar(
                sa.select(sa.func.max(jobs.c.finished_at)).where(sa.text(TERMINAL_CLAUSE))
            )
        last = max((at for at in (last_open, last_finished) if at is not None), default=None)
        return last if last is not None else datetime.fromtimestamp(0, tz=UTC)

    async def next_busy_at(self) -> datetime | None:
        """When the queue next has work for a worker: now if anything is ready or running, the earliest
        scheduled retry otherwise, None when nothing is coming. Both look-ups use partial indexes."""
        now = clock.now()
        due_now = sa.or_(
            sa.exists().where(jobs.c.state == JobState.READY.value, jobs.c.run_after <= now),
            sa.exists().where(jobs.c.state == JobState.RUNNING.value),
        )
        # Ready ones not yet due wait out a cooldown; one look-up per state, so each uses its partial index.
        later = [
            sa.select(sa.func.min(jobs.c.run_after)).where(jobs.c.state == state.value).scalar_subquery()
            for state in (JobState.READY, JobState.RETRY_SCHEDULED)
        ]
        async with self.db.read() as conn:
            if await conn.scalar(sa.select(due_now)):
                return now
            soonest = [at for at in (await conn.execute(sa.select(*later))).one() if isinstance(at, datetime)]
        return min(soonest, default=None)


async def _until_drained(batch: Callable[[], Awaitable[tuple[Sequence[int], T]]], limit: int) -> list[T]:
    """Run a scan's `batch` (one transaction: the ids it picked, and what it did) again while it comes back
    full and makes progress, so a burst of due items is all handled on this tick rather than `limit` a
    tick."""
    results: list[T] = []
    seen: set[int] = set()
    while True:
        picked, result = await batch()
        results.append(result)
        if len(picked) < limit or seen.issuperset(picked):
            return results
        seen.update(picked)


@dataclass
class _Climbed:
    """What one scan batch's climbs write after them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Notification] = field(default_factory=list)


async def _climb(conn: AsyncConnection, job: Job, ladder: Ladder, now: datetime, climbed: _Climbed) -> None:
    if job.state in TERMINAL_STATES or job.acknowledged_at is not None or job.sla_at is None:
        await conn.execute(jobs.update().where(jobs.c.id == job.id).values(sla_next_at=None))
        return
    overdue_s = (now - job.sla_at).total_seconds()
    due = ladder.due_level(overdue_s)
    next_after = ladder.next_after_s(max(due, job.sla_level))
    next_at = job.sla_at + timedelta(seconds=next_after) if next_after is not None else None
    if due <= job.sla_level:
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == job.id, jobs.c.sla_level == job.sla_level)
            .values(sla_next_at=next_at)
        )
        return
    claimed = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job.id, jobs.c.sla_level == job.sla_level)
        .values(sla_level=due, sla_next_at=next_at)
        .returning(jobs.c.id)
    )
    if claimed.first() is None:
        return
    # Levels passed over at once (the scheduler was down, or the ladder's first steps are short) are still
    # told: a backup must not learn of an item only because the level above theirs came due too.
    reached = [
        (level, target)
        for level in ladder.levels_between(job.sla_level, due)
        for target in ladder.targets(level)
    ]
    targets = list(dict.fromkeys(target for _, target in reached))
    climbed.events.append(
        event_row(
            job.id,
            at=now,
            actor="scheduler",
            kind="sla_escalated",
            details={"level": due, "notify": targets, "overdue_s": round(overdue_s, 1)},
        )
    )
    climbed.notes += [
        Notification(
            kind="sla.level",
            dedup_key=f"sla:{job.id}:{level}:{target}",
            target=target,
            payload={
                "job_id": job.id,
                "level": level,
                "state": job.state.value,
                "overdue_s": round(overdue_s, 1),
            },
            job_id=job.id,
        )
        for level, target in reached
    ]


async def _notify_lanes(conn: AsyncConnection, lanes: set[str]) -> None:
    if conn.dialect.name == "postgresql":
        for lane in sorted(lanes):
            await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, lane)))
