"""A worker's side of the store: batched claims, batched heartbeats, and the batched end of runs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.counts import add_finished, counting, day_of, key_for
from store.database import Database
from store.database import constant as _sql
from store.decisions import open_decision
from store.errors import InvalidTransition
from store.jobs import insert_jobs
from store.models import Job, RunEnd
from store.schema import UtcDateTime, events, jobs, lane_cooldowns, pauses
from store.states import JobState
from store.transitions import rows_to_jobs, transition


class ClaimsRepo:
    """Claims and run endings; every write names the run (`run_seq`) it belongs to."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Built once: SQLAlchemy then finds their compiled form in its cache and the driver its prepared
        # statement, instead of both being worked out again for every claim.
        if db.is_postgres:
            self._claim: sa.Executable = _claim_with_events()
            self._complete: sa.Executable = _complete_with_events()
        else:
            self._claim = _claim_only()
            self._claimed_events: sa.Executable = _events_of_claimed()
            self._complete = _complete_only()
            self._completed_events: sa.Executable = _events_of_completed()

    async def claim(self, lane: str, limit: int, *, worker: str) -> list[Job]:
        """Take up to `limit` ready jobs of a lane, most urgent first, unless the lane, the whole queue or
        the job's type is paused or the lane is cooling down. Each claim is recorded in the job's trail."""
        if limit <= 0:
            return []
        params = {"claim_lane": lane, "claim_limit": limit, "now": clock.now(), "worker": worker}
        if self.db.is_postgres:
            async with self.db.write_one() as conn:
                claimed = rows_to_jobs(await conn.execute(self._claim, params))
        else:
            async with self.db.write() as conn:
                claimed = rows_to_jobs(await conn.execute(self._claim, params))
                if claimed:
                    ids = json.dumps([job.id for job in claimed])
                    await conn.execute(self._claimed_events, {**params, "job_ids": ids})
        claimed.sort(key=lambda job: (job.priority.rank, job.run_after, job.id))
        return claimed

    async def heartbeat(self, runs: Sequence[tuple[int, int]], *, worker: str) -> set[int]:
        """Refresh the heartbeat of this worker's runs; returns the job ids it still holds. A job missing from
        the answer was cancelled, paused, expired or reaped: its run must stop."""
        if not runs:
            return set()
        now = clock.now()
        async with self.db.write() as conn:
            result = await conn.execute(
                jobs.update()
                .where(
                    sa.tuple_(jobs.c.id, jobs.c.run_seq).in_(list(runs)),
                    jobs.c.state == JobState.RUNNING.value,
                    jobs.c.claimed_by == worker,
                )
                .values(heartbeat_at=now)
                .returning(jobs.c.id)
            )
            return {row.id for row in result}

    async def finish(self, ends: Sequence[RunEnd]) -> set[int]:
        """Write the ends of many runs in one transaction. Returns the job ids whose end was recorded; a run
        that no longer holds its job (cancelled, reaped, paused meanwhile) changes nothing."""
        if not ends:
            return set()
        now = clock.now()
        plain = [end for end in ends if end.is_plain_completion]
        other = [end for end in ends if not end.is_plain_completion]
        # On PostgreSQL plain completions are one statement, counts and events included.
        async with self.db.write() if other or not self.db.is_postgres else self.db.write_one() as conn:
            done = await self._complete_plain(conn, plain, now)
            for end in other:
                if await _finish_one(conn, end, now):
                    done.add(end.job_id)
        return done

    async def _complete_plain(self, conn: AsyncConnection, ends: Sequence[RunEnd], now: datetime) -> set[int]:
        """Completions with nothing but a result: one UPDATE for the batch, its events written from the
        rows it changed, and the finished counts."""
        if not ends:
            return set()
        if self.db.is_postgres:
            columns = {
                "job_ids": [end.job_id for end in ends],
                "run_seqs": [end.run_seq for end in ends],
                "results": [_json_or_none(end.result) for end in ends],
                "actors": [end.actor for end in ends],
                "kinds": [end.event_kind for end in ends],
                "event_details": [_json_or_none(end.details) for end in ends],
            }
            params = {"now": now, "count_day": day_of(now), **columns}
            return {row.id for row in await conn.execute(self._complete, params)}
        as_json = {end.job_id: _end_as_json(end) for end in ends}
        rows = (await conn.execute(self._complete, {"now": now, "ends": _json_array(as_json.values())})).all()
        if rows:
            done_ends = _json_array(as_json[row.id] for row in rows)
            await conn.execute(self._completed_events, {"now": now, "ends": done_ends})
        await add_finished(conn, Counter(key_for(row.lane, JobState.COMPLETED, now) for row in rows))
        return {row.id for row in rows}


async def _finish_one(conn: AsyncConnection, end: RunEnd, now: datetime) -> bool:
    values: dict[str, Any] = {"failure_class": end.failure_class.value if end.failure_class else None}
    if end.to_state is not JobState.PENDING or end.reason is not None:
        values["reason"] = end.reason
    if end.result is not None:
        values["result"] = end.result
    if end.run_after is not None:
        values["run_after"] = end.run_after
    if end.spend_attempt:
        values["attempts"] = jobs.c.attempts + 1
    try:
        job, _ = await transition(
            conn,
            end.job_id,
            end.to_state,
            at=now,
            actor=end.actor,
            kind=end.event_kind,
            reason=end.reason,
            details=end.details,
            from_states=[JobState.RUNNING],
            run_seq=end.run_seq,
            values=values,
            notifications=end.notifications,
        )
    except InvalidTransition:
        return False
    if end.decision is not None:
        await open_decision(conn, job, end.decision, at=now, channel=end.decision_channel)
    if end.children:
        await insert_jobs(conn, end.children, at=now, actor=f"job:{job.id}")
    if end.lane_cooldown_until is not None and end.lane:
        await _set_cooldown(conn, end.lane, end.lane_cooldown_until)
    return True


async def _set_cooldown(conn: AsyncConnection, lane: str, until: datetime) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(lane_cooldowns).values(lane=lane, until=until)
    statement = statement.on_conflict_do_update(
        index_elements=["lane"],
        set_={"until": sa.func.max(lane_cooldowns.c.until, statement.excluded.until)}
        if conn.dialect.name == "sqlite"
        else {"until": sa.func.greatest(lane_cooldowns.c.until, statement.excluded.until)},
    )
    await conn.execute(statement)


# ---- the hot-path statements ------------------------------------------------------------------------------

_NOW = sa.bindparam("now", type_=UtcDateTime)
_LANE = sa.bindparam("claim_lane", type_=sa.String)
_WORKER = sa.bindparam("worker", type_=sa.String)
_LIMIT = sa.bindparam("claim_limit", type_=sa.Integer)
_EVENT_COLUMNS = ["job_id", "at", "actor", "kind", "from_state", "to_state", "details"]
_READY, _RUNNING, _COMPLETED = JobState.READY.value, JobState.RUNNING.value, JobState.COMPLETED.value


def _claimable() -> sa.Select[Any]:
    """Ids of the lane's due ready jobs, most urgent first, unless a pause or a cooldown holds them."""
    paused = sa.exists().where(
        sa.or_(
            pauses.c.scope == _sql("all"),
            sa.and_(pauses.c.scope == _sql("lane"), pauses.c.name == _LANE),
            sa.and_(pauses.c.scope == _sql("type"), pauses.c.name == jobs.c.type),
        )
    )
    cooling = sa.exists().where(lane_cooldowns.c.lane == _LANE, lane_cooldowns.c.until > _NOW)
    return (
        sa.select(jobs.c.id)
        .where(
            jobs.c.state == _sql(_READY), jobs.c.lane == _LANE, jobs.c.run_after <= _NOW, ~paused, ~cooling
        )
        .order_by(jobs.c.priority, jobs.c.run_after, jobs.c.id)
        .limit(_LIMIT)
    )


def _claim_update(picked: sa.ColumnElement[bool]) -> sa.Update:
    return (
        jobs.update()
        .where(picked, jobs.c.state == _sql(_READY))
        .values(
            state=_sql(_RUNNING),
            run_seq=jobs.c.run_seq + 1,
            claimed_by=_WORKER,
            started_at=_NOW,
            heartbeat_at=_NOW,
            updated_at=_NOW,
        )
        .returning(*jobs.c)
    )


def _claim_with_events() -> sa.Select[Any]:
    """PostgreSQL: pick (a MATERIALIZED CTE with SKIP LOCKED: an IN-subquery with LIMIT may be re-run by
    the planner and hand out more rows than the limit), update and write the `claimed` events, in one
    statement."""
    picked = _claimable().with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
    claimed = _claim_update(jobs.c.id.in_(sa.select(picked.c.id))).cte("claimed")
    trail = events.insert().from_select(
        _EVENT_COLUMNS,
        sa.select(
            claimed.c.id,
            _NOW,
            _WORKER,
            _sql("claimed"),
            _sql(_READY),
            _sql(_RUNNING),
            sa.func.jsonb_build_object(_sql("run"), claimed.c.run_seq),
        ),
    )
    return sa.select(*claimed.c).add_cte(trail.cte("trail"))


def _claim_only() -> sa.Update:
    """SQLite: the pick runs once, under the write lock."""
    return _claim_update(jobs.c.id.in_(_claimable().scalar_subquery()))


def _events_of_claimed() -> sa.Insert:
    """SQLite: the `claimed` events of the jobs whose ids are in the JSON array `job_ids`."""
    ids = sa.func.json_each(sa.bindparam("job_ids", type_=sa.String)).table_valued("value")
    return events.insert().from_select(
        _EVENT_COLUMNS,
        sa.select(
            jobs.c.id,
            _NOW,
            _WORKER,
            _sql("claimed"),
            _sql(_READY),
            _sql(_RUNNING),
            sa.func.json_object(_sql("run"), jobs.c.run_seq),
        ).where(jobs.c.id.in_(sa.select(ids.c.value))),
    )


def _completed_values(result: sa.ColumnElement[Any]) -> dict[str, Any]:
    """A completion with no result keeps the one the job has."""
    return {
        "state": _sql(_COMPLETED),
        "finished_at": _NOW,
        "updated_at": _NOW,
        "reason": sa.null(),
        "failure_class": sa.null(),
        "sla_next_at": sa.null(),
        "result": sa.case((result.is_(None), jobs.c.result), else_=result),
    }


def _complete_with_events() -> sa.Select[Any]:
    """PostgreSQL: complete the runs given as parallel arrays (ids, run numbers, results and event fields
    as JSON text), write their events, and return the jobs completed, in one statement."""
    text_array = postgresql.ARRAY(sa.Text)
    ends = (
        sa.func.unnest(
            sa.bindparam("job_ids", type_=postgresql.ARRAY(sa.BigInteger)),
            sa.bindparam("run_seqs", type_=postgresql.ARRAY(sa.Integer)),
            sa.bindparam("results", type_=text_array),
            sa.bindparam("actors", type_=text_array),
            sa.bindparam("kinds", type_=text_array),
            sa.bindparam("event_details", type_=text_array),
        )
        .table_valued("id", "seq", "result", "actor", "kind", "details", name="ends")
        .render_derived()
    )
    done = (
        jobs.update()
        .where(jobs.c.id == ends.c.id, jobs.c.run_seq == ends.c.seq, jobs.c.state == _sql(_RUNNING))
        .values(**_completed_values(sa.cast(ends.c.result, postgresql.JSONB)))
        .returning(jobs.c.id, jobs.c.lane, ends.c.actor, ends.c.kind, ends.c.details)
        .cte("done")
    )
    trail = events.insert().from_select(
        _EVENT_COLUMNS,
        sa.select(
            done.c.id,
            _NOW,
            done.c.actor,
            done.c.kind,
            _sql(_RUNNING),
            _sql(_COMPLETED),
            sa.cast(done.c.details, postgresql.JSONB),
        ),
    )
    counted = counting(done, day=sa.bindparam("count_day", type_=sa.String), state=JobState.COMPLETED)
    return sa.select(done.c.id, done.c.lane).add_cte(trail.cte("trail"), counted.cte("counted"))


def _ends_table() -> sa.Subquery:
    """SQLite: the JSON array `ends` of [id, run, result, actor, kind, details] as rows."""
    each = sa.func.json_each(sa.bindparam("ends", type_=sa.String)).table_valued("value")
    field = [sa.func.json_extract(each.c.value, f"$[{i}]") for i in range(6)]
    names = ("id", "seq", "result", "actor", "kind", "details")
    return sa.select(*(value.label(name) for value, name in zip(field, names, strict=True))).subquery("ends")


def _complete_only() -> sa.Update:
    """SQLite: complete the runs in the JSON array `ends` (results are JSON text inside it)."""
    ends = _ends_table()
    return (
        jobs.update()
        .where(jobs.c.id == ends.c.id, jobs.c.run_seq == ends.c.seq, jobs.c.state == _sql(_RUNNING))
        .values(**_completed_values(ends.c.result))
        .returning(jobs.c.id, jobs.c.lane)
    )


def _events_of_completed() -> sa.Insert:
    ends = _ends_table()
    return events.insert().from_select(
        _EVENT_COLUMNS,
        sa.select(
            ends.c.id, _NOW, ends.c.actor, ends.c.kind, _sql(_RUNNING), _sql(_COMPLETED), ends.c.details
        ),
    )


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _end_as_json(end: RunEnd) -> list[Any]:
    return [
        end.job_id,
        end.run_seq,
        _json_or_none(end.result),
        end.actor,
        end.event_kind,
        _json_or_none(end.details),
    ]


def _json_array(items: Iterable[list[Any]]) -> str:
    return json.dumps(list(items))
