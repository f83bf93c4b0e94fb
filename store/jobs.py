"""Writing and reading jobs: enqueue with idempotency keys, look-ups, human transitions, board counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.counts import finished_by_lane
from store.database import Database, constant
from store.errors import JobNotFound
from store.models import Event, Job, NewJob
from store.schema import OPEN_CLAUSE, UtcDateTime, events, jobs, lane_cooldowns, pauses
from store.states import JobState
from store.trail import event_row, insert_events, insert_notifications, read_events
from store.transitions import row_to_job, rows_to_jobs, standard_notifications, transition

#: The channel other replicas LISTEN on to learn of new ready work.
NOTIFY_CHANNEL = "queuebot_jobs"

#: Rows per multi-row INSERT of keyed jobs, well inside both databases' limit on bound parameters.
KEYED_INSERT_CHUNK = 500

#: States in which a job waits for a person or a clock rather than for a worker.
WAITING_STATES = frozenset(
    {
        JobState.PENDING,
        JobState.READY,
        JobState.WAITING_DECISION,
        JobState.NEEDS_REVIEW,
        JobState.RETRY_SCHEDULED,
        JobState.BLOCKED,
        JobState.ESCALATED,
        JobState.PAUSED,
    }
)


class Enqueued(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: Job
    created: bool  # False when the idempotency key matched an existing job


class BoardStats(BaseModel):
    """Counts for `queuebot status` and the Home tab."""

    model_config = ConfigDict(frozen=True)

    states: dict[str, int]
    lanes: dict[str, dict[str, int]]
    oldest_waiting_s: dict[str, float]
    sla_breaches: int


def _row_for(new: NewJob, at: datetime) -> dict[str, Any]:
    return {
        "type": new.type,
        "lane": new.lane,
        "priority": new.priority.rank,
        "input": new.input,
        "owner": new.owner,
        "channel": new.channel,
        "idempotency_key": new.idempotency_key,
        "state": new.state.value,
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "run_seq": 0,
        "run_after": new.run_after or at,
        "created_at": at,
        "updated_at": at,
        "deadline_at": new.deadline_at,
        "sla_at": new.sla_at,
        "sla_level": 0,
        "sla_next_at": new.sla_at,
        "spend_usd": 0.0,
        "budget_usd": new.budget_usd,
        "parent_id": new.parent_id,
        "reason": new.reason,
    }


async def insert_jobs(
    conn: AsyncConnection,
    new_jobs: Sequence[NewJob],
    *,
    at: datetime,
    actor: str,
    claim_for: str | None = None,
) -> list[Enqueued]:
    """Write jobs in the caller's transaction. A job whose idempotency key exists is not written again:
    the existing job comes back with created=False (also when another transaction wins the race).

    `claim_for` names a worker of this process idle on the first job's lane: on PostgreSQL that job is
    written already claimed by it (state running) when it could be claimed at once; SQLite leaves it ready
    for the worker's own claim."""
    postgres = conn.dialect.name == "postgresql"
    if not postgres:
        new_jobs = await _hold_paused(conn, new_jobs)  # PostgreSQL's INSERT holds them itself
    first_of_key: dict[str, NewJob] = {}
    plain: list[NewJob] = []
    for new in new_jobs:
        if new.idempotency_key is None:
            plain.append(new)
        else:
            first_of_key.setdefault(new.idempotency_key, new)
    if postgres:
        keyed = list(first_of_key.values())
        created_plain, created_keyed = await _insert_postgres(conn, plain, keyed, at, actor, claim_for)
    else:
        created_plain = await _insert_plain(conn, plain, at)
        created_keyed = await _insert_keyed(conn, list(first_of_key.values()), at)
    existing: dict[str, Job] = {}
    missing = [key for key in first_of_key if key not in created_keyed]
    if missing:
        found = await conn.execute(sa.select(jobs).where(jobs.c.idempotency_key.in_(missing)))
        existing = {str(job.idempotency_key): job for job in map(row_to_job, found)}
    fresh = iter(created_plain)
    result_list: list[Enqueued] = []
    for new in new_jobs:
        key = new.idempotency_key
        if key is None:
            result_list.append(Enqueued(job=next(fresh), created=True))
        elif key in created_keyed:
            job = created_keyed[key]
            result_list.append(Enqueued(job=job, created=new is first_of_key[key]))
        else:
            result_list.append(Enqueued(job=existing[key], created=False))
    created = [*created_plain, *created_keyed.values()]
    if not postgres:
        await insert_events(conn, [_enqueued_event(job, at, actor) for job in created])
    await insert_notifications(
        conn,
        [
            note
            for job in created
            if job.state is JobState.PENDING
            for note in standard_notifications(job, at)
        ],
        at,
    )
    return result_list


def _enqueued_event(job: Job, at: datetime, actor: str) -> dict[str, Any]:
    details = {"parent": job.parent_id} if job.parent_id else None
    return event_row(
        job.id, at=at, actor=actor, kind="enqueued", to_state=job.state, reason=job.reason, details=details
    )


async def _hold_paused(conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> list[NewJob]:
    """Jobs enqueued into a paused scope (all, their lane or their type) start paused; read in the same
    transaction as the insert, so a pause cannot slip in between."""
    held = {(row.scope, row.name) for row in await conn.execute(sa.select(pauses.c.scope, pauses.c.name))}
    if not held:
        return list(new_jobs)
    return [
        new.model_copy(update={"state": JobState.PAUSED, "reason": "paused at enqueue"})
        if new.state is JobState.READY and {("all", ""), ("lane", new.lane), ("type", new.type)} & held
        else new
        for new in new_jobs
    ]


async def _insert_plain(conn: AsyncConnection, new_jobs: Sequence[NewJob], at: datetime) -> list[Job]:
    """SQLite: insert jobs without keys; returns them in input order."""
    if not new_jobs:
        return []
    rows = [_row_for(new, at) for new in new_jobs]
    # SQLAlchemy cannot batch INSERT .. RETURNING in parameter order on SQLite and falls back to one
    # statement per row. The writer holds the database lock and ids only grow (AUTOINCREMENT), so a
    # batched insert whose rows come back sorted by id is in parameter order.
    result = await conn.execute(jobs.insert().returning(*jobs.c), rows)
    return sorted((row_to_job(row) for row in result), key=lambda job: job.id)


async def _insert_keyed(conn: AsyncConnection, new_jobs: Sequence[NewJob], at: datetime) -> dict[str, Job]:
    """SQLite: insert jobs with distinct idempotency keys, skipping keys that exist; returns the inserted by
    key."""
    if not new_jobs:
        return {}
    inserted: dict[str, Job] = {}
    for start in range(0, len(new_jobs), KEYED_INSERT_CHUNK):
        statement = (
            sqlite.insert(jobs)
            .values([_row_for(new, at) for new in new_jobs[start : start + KEYED_INSERT_CHUNK]])
            .on_conflict_do_nothing(
                index_elements=[jobs.c.idempotency_key], index_where=jobs.c.idempotency_key.is_not(None)
            )
            .returning(*jobs.c)
        )
        inserted.update(
            {str(job.idempotency_key): job for job in map(row_to_job, await conn.execute(statement))}
        )
    return inserted


async def _insert_postgres(
    conn: AsyncConnection,
    plain: Sequence[NewJob],
    keyed: Sequence[NewJob],
    at: datetime,
    actor: str,
    claim_for: str | None,
) -> tuple[list[Job], dict[str, Job]]:
    """PostgreSQL: insert jobs with and without keys, their `enqueued` events and the NOTIFY of their lanes in
    one statement. Returns the jobs without keys in input order and the inserted keyed ones by key."""
    new_jobs = [*plain, *keyed]
    if not new_jobs:
        return [], {}
    columns: dict[str, Any]
    if len(new_jobs) == 1:
        statement, columns = _INSERT_ONE_WITH_EVENTS, _new_values(new_jobs[0])
    else:
        statement, columns = _INSERT_WITH_EVENTS, {name: [] for name in _NEW_COLUMNS}
        for new in new_jobs:
            for name, value in _new_values(new).items():
                columns[name].append(value)
    result = await conn.execute(statement, {"at": at, "actor": actor, "hand_to": claim_for, **columns})
    # Ids are drawn in the order the rows are inserted, which is input order (ORDER BY the ordinality).
    created = sorted(rows_to_jobs(result), key=lambda job: job.id)
    without_key = [job for job in created if job.idempotency_key is None]
    return without_key, {str(job.idempotency_key): job for job in created if job.idempotency_key is not None}


def _new_values(new: NewJob) -> dict[str, Any]:
    return {
        "new_type": new.type,
        "new_lane": new.lane,
        "new_priority": new.priority.rank,
        "new_input": json.dumps(new.input),
        "new_owner": new.owner,
        "new_channel": new.channel,
        "new_key": new.idempotency_key,
        "new_state": new.state.value,
        "new_max_attempts": new.max_attempts,
        "new_run_after": new.run_after,
        "new_deadline_at": new.deadline_at,
        "new_sla_at": new.sla_at,
        "new_budget_usd": new.budget_usd,
        "new_parent_id": new.parent_id,
        "new_reason": new.reason,
    }


_NEW_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "new_type": sa.Text(),
    "new_lane": sa.Text(),
    "new_priority": sa.SmallInteger(),
    "new_input": sa.Text(),
    "new_owner": sa.Text(),
    "new_channel": sa.Text(),
    "new_key": sa.Text(),
    "new_state": sa.Text(),
    "new_max_attempts": sa.Integer(),
    "new_run_after": UtcDateTime(),
    "new_deadline_at": UtcDateTime(),
    "new_sla_at": UtcDateTime(),
    "new_budget_usd": sa.Float(),
    "new_parent_id": sa.BigInteger(),
    "new_reason": sa.Text(),
}


def _insert_with_events(*, one: bool) -> sa.Select[Any]:
    """The statements behind `_insert_postgres`: one job as plain parameters, or many as one array per column
    (so the SQL is the same for any number of jobs and is prepared once); a job enqueued into a paused scope
    starts paused,
    a key that exists is skipped, and each inserted job gets its `enqueued` event and, if ready, a NOTIFY of
    its lane (PostgreSQL delivers one per lane and transaction).

    With `hand_to` set (a worker of the enqueuing process, idle on the first job's lane), the first job is
    written already claimed by that worker, with its `claimed` event, if it could be claimed at once: due,
    not paused, its lane not cooling down and no due ready job of its lane waiting ahead of it."""
    at = sa.bindparam("at", type_=UtcDateTime)
    hand_to = sa.bindparam("hand_to", type_=sa.String)
    new: sa.FromClause
    if one:
        # One job, the common case, as plain parameters: PostgreSQL then plans the statement once for good
        # (a generic plan); with arrays it keeps planning anew (0.4 ms), unable to tell their length.
        columns = [
            sa.bindparam(name, type_=kind).label(name.removeprefix("new_"))
            for name, kind in _NEW_COLUMNS.items()
        ]
        new = sa.select(*columns, sa.literal(1).label("n")).subquery("new")
    else:
        arrays = [sa.bindparam(name, type_=postgresql.ARRAY(kind)) for name, kind in _NEW_COLUMNS.items()]
        new = (
            sa.func.unnest(*arrays)
            .table_valued(
                *(name.removeprefix("new_") for name in _NEW_COLUMNS), with_ordinality="n", name="new"
            )
            .render_derived()
        )
    paused = sa.exists().where(
        sa.or_(
            pauses.c.scope == "all",
            sa.and_(pauses.c.scope == "lane", pauses.c.name == new.c.lane),
            sa.and_(pauses.c.scope == "type", pauses.c.name == new.c.type),
        )
    )
    cooling = sa.exists().where(lane_cooldowns.c.lane == new.c.lane, lane_cooldowns.c.until > at)
    # The lane's most urgent due job, looked up the way a claim does (its partial index, in its order): an
    # EXISTS here is planned from the table's statistics, and a queue's change by the minute.
    waiting = (
        sa.select(jobs.c.id)
        .where(
            jobs.c.state == constant(JobState.READY.value), jobs.c.lane == new.c.lane, jobs.c.run_after <= at
        )
        .order_by(jobs.c.priority, jobs.c.run_after, jobs.c.id)
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )
    ready = new.c.state == JobState.READY.value
    handed = sa.and_(
        hand_to.is_not(None),
        new.c.n == 1,
        ready,
        sa.or_(new.c.run_after.is_(None), new.c.run_after <= at),
        ~paused,
        ~cooling,
        ~waiting,
    )
    # MATERIALIZED: each row's flags are worked out once, not once per column that uses them.
    f = (
        sa.select(*new.c, sa.and_(ready, paused).label("held"), handed.label("handed"))
        .cte("flagged")
        .prefix_with("MATERIALIZED")
    )
    written = {
        "type": f.c.type,
        "lane": f.c.lane,
        "priority": f.c.priority,
        "input": sa.cast(f.c.input, postgresql.JSONB),
        "owner": f.c.owner,
        "channel": f.c.channel,
        "idempotency_key": f.c.key,
        "state": sa.case(
            (f.c.held, JobState.PAUSED.value), (f.c.handed, JobState.RUNNING.value), else_=f.c.state
        ),
        "attempts": sa.literal(0),
        "max_attempts": f.c.max_attempts,
        "run_seq": sa.case((f.c.handed, 1), else_=0),
        "run_after": sa.func.coalesce(f.c.run_after, at),
        "created_at": at,
        "updated_at": at,
        "started_at": sa.case((f.c.handed, at)),
        "heartbeat_at": sa.case((f.c.handed, at)),
        "claimed_by": sa.case((f.c.handed, hand_to)),
        "deadline_at": f.c.deadline_at,
        "sla_at": f.c.sla_at,
        "sla_level": sa.literal(0),
        "sla_next_at": f.c.sla_at,
        "spend_usd": sa.literal(0.0),
        "budget_usd": f.c.budget_usd,
        "parent_id": f.c.parent_id,
        "reason": sa.case((f.c.held, "paused at enqueue"), else_=f.c.reason),
    }
    inserted = (
        postgresql.insert(jobs)
        .from_select(list(written), sa.select(*written.values()).order_by(f.c.n))
        .on_conflict_do_nothing(
            index_elements=[jobs.c.idempotency_key], index_where=jobs.c.idempotency_key.is_not(None)
        )
        .returning(*jobs.c)
        .cte("inserted")
    )
    running = inserted.c.state == JobState.RUNNING.value
    no_text = sa.cast(sa.null(), sa.String)
    enqueued = sa.select(
        inserted.c.id,
        at,
        sa.bindparam("actor", type_=sa.String),
        sa.literal("enqueued"),
        no_text,
        sa.case((running, JobState.READY.value), else_=inserted.c.state),
        inserted.c.reason,
        sa.case(
            (inserted.c.parent_id.is_(None), sa.null()),
            else_=sa.func.jsonb_build_object("parent", inserted.c.parent_id),
        ),
    )
    claimed = sa.select(
        inserted.c.id,
        at,
        hand_to,
        sa.literal("claimed"),
        sa.literal(JobState.READY.value),
        sa.literal(JobState.RUNNING.value),
        no_text,
        sa.func.jsonb_build_object("run", inserted.c.run_seq),
    ).where(running)
    trail = events.insert().from_select(
        ["job_id", "at", "actor", "kind", "from_state", "to_state", "reason", "details"],
        sa.union_all(enqueued, claimed),
    )
    wake = sa.case(
        (inserted.c.state == JobState.READY.value, sa.func.pg_notify(NOTIFY_CHANNEL, inserted.c.lane))
    )
    return sa.select(*inserted.c, wake.label("notified")).add_cte(trail.cte("trail"))


_INSERT_WITH_EVENTS = _insert_with_events(one=False)
_INSERT_ONE_WITH_EVENTS = _insert_with_events(one=True)


class JobsRepo:
    """Jobs as people and the engine see them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(
        self, new_jobs: Sequence[NewJob], *, actor: str, claim_for: str | None = None
    ) -> list[Enqueued]:
        """Write jobs in one transaction (see insert_jobs for `claim_for`). On PostgreSQL, jobs that need no
        notification go in a single statement without BEGIN and COMMIT."""
        alone = all(new.state is not JobState.PENDING for new in new_jobs)
        async with self.db.write_one() if alone else self.db.write() as conn:
            return await insert_jobs(conn, new_jobs, at=clock.now(), actor=actor, claim_for=claim_for)

    async def get(self, job_id: int) -> Job:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(job_id)
        return row_to_job(row)

    async def events(self, job_id: int) -> list[Event]:
        async with self.db.read() as conn:
            return await read_events(conn, job_id)

    async def list(
        self,
        *,
        states: Sequence[JobState] | None = None,
        lane: str | None = None,
        owner: str | None = None,
        type: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first, filtered."""
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if states is not None:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        if lane is not None:
            query = query.where(jobs.c.lane == lane)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if type is not None:
            query = query.where(jobs.c.type == type)
        async with self.db.read() as conn:
            return rows_to_jobs(await conn.execute(query))

    async def move(
        self,
        job_id: int,
        to: JobState,
        *,
        actor: str,
        reason: str | None = None,
        from_states: Sequence[JobState] | None = None,
        values: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> Job:
        """A person's or a rule's transition (cancel, retry, pause, resume…)."""
        async with self.db.write() as conn:
            job, _ = await transition(
                conn,
                job_id,
                to,
                at=clock.now(),
                actor=actor,
                reason=reason,
                from_states=from_states,
                values=values,
                kind=kind,
            )
            return job

    async def add_event(
        self,
        job_id: int,
        *,
        actor: str,
        kind: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append to a job's trail without changing its state (evidence, audits, denials)."""
        async with self.db.write() as conn:
            await insert_events(
                conn,
                [event_row(job_id, at=clock.now(), actor=actor, kind=kind, reason=reason, details=details)],
            )

    async def acknowledge(self, job_id: int, *, actor: str) -> Job:
        """Stop a job's escalation ladder; recorded in its trail."""
        at = clock.now()
        async with self.db.write() as conn:
            result = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.acknowledged_at.is_(None))
                .values(acknowledged_at=at, acknowledged_by=actor, updated_at=at, sla_next_at=None)
                .returning(*jobs.c)
            )
            row = result.first()
            if row is None:
                return await self._get_in(conn, job_id)
            await insert_events(conn, [event_row(job_id, at=at, actor=actor, kind="acknowledged")])
            return row_to_job(row)

    async def _get_in(self, conn: AsyncConnection, job_id: int) -> Job:
        row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(job_id)
        return row_to_job(row)

    async def stats(self) -> BoardStats:
        """Counts by state and lane, oldest waiting age per state, and SLA breaches. Open jobs are counted
        through the partial indexes on open states and finished ones from their counts (store.counts), so
        the cost follows open work, not history."""
        now = clock.now()
        # The partial indexes' own predicate, word for word: SQLite only uses a partial index whose WHERE
        # terms appear in the query's (PostgreSQL would prove `state IN (…open…)` implies it).
        open_jobs = sa.text(OPEN_CLAUSE)
        async with self.db.read() as conn:
            by_state_lane = await conn.execute(
                sa.select(jobs.c.state, jobs.c.lane, sa.func.count())
                .where(open_jobs)
                .group_by(jobs.c.state, jobs.c.lane)
            )
            counted = [(state, lane, count) for state, lane, count in by_state_lane]
            counted += [
                (state, lane, count) for (lane, state), count in (await finished_by_lane(conn)).items()
            ]
            oldest = await conn.execute(
                sa.select(jobs.c.state, sa.func.min(jobs.c.updated_at))
                .where(open_jobs, jobs.c.state.in_([s.value for s in WAITING_STATES]))
                .group_by(jobs.c.state)
            )
            oldest_s = {state: max(0.0, (now - since).total_seconds()) for state, since in oldest if since}
            breaches = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.sla_at.is_not(None), open_jobs, jobs.c.sla_at < now)
            )
        states: dict[str, int] = {s.value: 0 for s in JobState}
        lanes: dict[str, dict[str, int]] = {}
        for state, lane, count in counted:
            if count:
                states[state] += count
                lanes.setdefault(lane, {})[state] = count
        return BoardStats(states=states, lanes=lanes, oldest_waiting_s=oldest_s, sla_breaches=breaches or 0)
