"""Controls on the queue: pauses (the kill switch), lane cooldowns, write-once markers and spend."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.database import Database
from store.schema import daily_spend, jobs, lane_cooldowns, markers, pauses
from store.states import JobState
from store.trail import event_row, insert_events

PauseScope = Literal["all", "lane", "type", "job"]
#: States that a pause takes a job out of; a running job stops at its next heartbeat.
PAUSABLE_STATES = (JobState.READY, JobState.RETRY_SCHEDULED, JobState.RUNNING)


class Pause(BaseModel):
    model_config = ConfigDict(frozen=True)

    scope: PauseScope
    name: str
    paused_by: str
    reason: str | None
    at: datetime


class Spent(BaseModel):
    """Running totals after a spend was recorded."""

    model_config = ConfigDict(frozen=True)

    job_usd: float
    type_today_usd: float
    all_today_usd: float


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _scope_filter(scope: PauseScope, name: str) -> sa.ColumnElement[bool]:
    if scope == "all":
        return sa.true()
    if scope == "lane":
        return jobs.c.lane == name
    if scope == "type":
        return jobs.c.type == name
    return jobs.c.id == int(name)


def _covered_by_pause() -> sa.Exists:
    """True for a job row that some pause still holds."""
    return sa.exists().where(
        sa.or_(
            pauses.c.scope == "all",
            sa.and_(pauses.c.scope == "lane", pauses.c.name == jobs.c.lane),
            sa.and_(pauses.c.scope == "type", pauses.c.name == jobs.c.type),
            sa.and_(pauses.c.scope == "job", pauses.c.name == sa.cast(jobs.c.id, sa.String)),
        )
    )


class ControlsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def pause(self, scope: PauseScope, name: str, *, actor: str, reason: str | None = None) -> int:
        """Pause claims for a scope at once and move its ready, retrying and running jobs to paused.
        Returns how many jobs were paused."""
        at = clock.now()
        async with self.db.write() as conn:
            await conn.execute(
                _insert(conn)(pauses)
                .values(scope=scope, name=name, paused_by=actor, reason=reason, at=at)
                .on_conflict_do_nothing()
            )
            moved = 0
            for source in PAUSABLE_STATES:
                result = await conn.execute(
                    jobs.update()
                    .where(_scope_filter(scope, name), jobs.c.state == source.value)
                    .values(state=JobState.PAUSED.value, updated_at=at, reason=reason or f"paused ({scope})")
                    .returning(jobs.c.id)
                )
                ids = [row.id for row in result]
                moved += len(ids)
                await insert_events(
                    conn,
                    [
                        event_row(
                            job_id,
                            at=at,
                            actor=actor,
                            kind="paused",
                            from_state=source,
                            to_state=JobState.PAUSED,
                            reason=reason,
                            details={"scope": scope, "name": name},
                        )
                        for job_id in ids
                    ],
                )
            return moved

    async def resume(self, scope: PauseScope, name: str, *, actor: str) -> int:
        """Lift a pause; its jobs go back to ready unless another pause still holds them."""
        at = clock.now()
        async with self.db.write() as conn:
            await conn.execute(pauses.delete().where(pauses.c.scope == scope, pauses.c.name == name))
            result = await conn.execute(
                jobs.update()
                .where(
                    _scope_filter(scope, name), jobs.c.state == JobState.PAUSED.value, ~_covered_by_pause()
                )
                .values(state=JobState.READY.value, updated_at=at, run_after=at, reason=None)
                .returning(jobs.c.id, jobs.c.lane)
            )
            rows = result.all()
            await insert_events(
                conn,
                [
                    event_row(
                        row.id,
                        at=at,
                        actor=actor,
                        kind="resumed",
                        from_state=JobState.PAUSED,
                        to_state=JobState.READY,
                        details={"scope": scope, "name": name},
                    )
                    for row in rows
                ],
            )
            if self.db.is_postgres:
                for lane in sorted({row.lane for row in rows}):
                    await conn.execute(sa.select(sa.func.pg_notify("queuebot_jobs", lane)))
            return len(rows)

    async def pauses(self) -> list[Pause]:
        async with self.db.read() as conn:
            result = await conn.execute(sa.select(pauses).order_by(pauses.c.at))
            return [Pause.model_validate(dict(row._mapping)) for row in result]

    async def cooldowns(self) -> dict[str, datetime]:
        """Lanes cooling down after a rate limit, with the time they open again."""
        now = clock.now()
        async with self.db.read() as conn:
            result = await conn.execute(sa.select(lane_cooldowns).where(lane_cooldowns.c.until > now))
            return {row.lane: row.until for row in result}

    async def marker(self, job_id: int, key: str) -> tuple[bool, Any]:
        """(found, value) of a write-once marker."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(markers.c.value).where(markers.c.job_id == job_id, markers.c.key == key)
                )
            ).first()
        return (False, None) if row is None else (True, row.value)

    async def put_marker(self, job_id: int, key: str, value: Any) -> Any:
        """Write a marker once; if one exists already, that first value is kept and returned."""
        at = clock.now()
        async with self.db.write() as conn:
            await conn.execute(
                _insert(conn)(markers)
                .values(job_id=job_id, key=key, value=value, at=at)
                .on_conflict_do_nothing()
            )
            stored = await conn.scalar(
                sa.select(markers.c.value).where(markers.c.job_id == job_id, markers.c.key == key)
            )
            await insert_events(
                conn, [event_row(job_id, at=at, actor=f"job:{job_id}", kind="once", details={"key": key})]
            )
        return stored

    async def spend(self, job_id: int, job_type: str, usd: float, *, actor: str) -> Spent:
        """Add to a job's spend and today's totals (per type and overall)."""
        at = clock.now()
        day = at.date().isoformat()
        async with self.db.write() as conn:
            job_total = await conn.scalar(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(spend_usd=jobs.c.spend_usd + usd)
                .returning(jobs.c.spend_usd)
            )
            totals = {}
            for key in (job_type, "*"):
                statement = _insert(conn)(daily_spend).values(day=day, type=key, usd=usd)
                statement = statement.on_conflict_do_update(
                    index_elements=["day", "type"], set_={"usd": daily_spend.c.usd + statement.excluded.usd}
                )
                await conn.execute(statement)
                totals[key] = await conn.scalar(
                    sa.select(daily_spend.c.usd).where(daily_spend.c.day == day, daily_spend.c.type == key)
                )
            await insert_events(
                conn, [event_row(job_id, at=at, actor=actor, kind="spend", details={"usd": usd})]
            )
        return Spent(
            job_usd=float(job_total or 0.0),
            type_today_usd=float(totals[job_type] or 0.0),
            all_today_usd=float(totals["*"] or 0.0),
        )

    async def spend_today(self) -> dict[str, float]:
        day = clock.now().date().isoformat()
        async with self.db.read() as conn:
            result = await conn.execute(sa.select(daily_spend).where(daily_spend.c.day == day))
            return {row.type: float(row.usd) for row in result}
