"""Counts of finished jobs by the UTC day they finished, lane and terminal state.

Open jobs are few and counted live through the partial index on open states; finished jobs are history and
grow without bound, so the board reads them from these counts instead. Every move into a terminal state adds
one, a human re-queueing a finished job takes one away, and pruning takes away what it deletes; all in the
transaction that changes the jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import TERMINAL_CLAUSE, finished_counts, jobs
from store.states import TERMINAL_STATES, JobState

#: (day, lane, state): the key of one count.
CountKey = tuple[str, str, str]


def day_of(at: datetime) -> str:
    """The UTC day a job finished, as the counts key it."""
    return (at.astimezone(UTC) if at.tzinfo else at).date().isoformat()


def key_for(lane: str, state: JobState, finished_at: datetime) -> CountKey:
    return day_of(finished_at), lane, state.value


def _adding(statement: postgresql.Insert | sqlite.Insert) -> postgresql.Insert | sqlite.Insert:
    """The insert, adding to a count that exists instead."""
    return statement.on_conflict_do_update(
        index_elements=[finished_counts.c.day, finished_counts.c.lane, finished_counts.c.state],
        set_={"jobs": finished_counts.c.jobs + statement.excluded.jobs},
    )


#: Built once per dialect, as they are run for every batch of completions.
_ADD = {
    "postgresql": _adding(postgresql.insert(finished_counts)),
    "sqlite": _adding(sqlite.insert(finished_counts)),
}


async def add_finished(conn: AsyncConnection, changes: Mapping[CountKey, int]) -> None:
    """Add to the counts (negative numbers take away), in the caller's transaction."""
    rows = [
        {"day": day, "lane": lane, "state": state, "jobs": n}
        for (day, lane, state), n in changes.items()
        if n
    ]
    if rows:
        await conn.execute(_ADD[conn.dialect.name], rows)


def counting(finished: sa.CTE, *, day: sa.BindParameter[str], state: JobState) -> postgresql.Insert:
    """PostgreSQL, inside a statement: count the rows of its CTE `finished` (which has a `lane` column), all
    just moved to `state` on `day`."""
    lane = finished.c.lane
    statement = postgresql.insert(finished_counts).from_select(
        ["day", "lane", "state", "jobs"],
        sa.select(day, lane, sa.literal(state.value), sa.func.count()).group_by(lane),
    )
    return statement.on_conflict_do_update(
        index_elements=[finished_counts.c.day, finished_counts.c.lane, finished_counts.c.state],
        set_={"jobs": finished_counts.c.jobs + statement.excluded.jobs},
    )


async def finished_by_lane(conn: AsyncConnection) -> dict[tuple[str, str], int]:
    """Finished jobs still in the table, by (lane, state)."""
    result = await conn.execute(
        sa.select(finished_counts.c.lane, finished_counts.c.state, sa.func.sum(finished_counts.c.jobs))
        .where(finished_counts.c.state.in_([s.value for s in TERMINAL_STATES]))
        .group_by(finished_counts.c.lane, finished_counts.c.state)
    )
    # A count can only go below zero if a job was moved behind the store's back (a test set-up).
    return {(lane, state): max(0, int(n or 0)) for lane, state, n in result}


async def forget_empty(conn: AsyncConnection) -> None:
    """Drop counts that pruning brought down to nothing."""
    await conn.execute(finished_counts.delete().where(finished_counts.c.jobs == 0))


async def recount_finished(conn: AsyncConnection) -> None:
    """Rebuild the counts from the jobs table: after loading jobs with plain SQL, or to repair drift."""
    finished_at = sa.func.coalesce(jobs.c.finished_at, jobs.c.updated_at)
    if conn.dialect.name == "postgresql":
        day = sa.func.to_char(finished_at, "YYYY-MM-DD")
    else:
        day = sa.func.substr(finished_at, 1, 10)
    await conn.execute(finished_counts.delete())
    await conn.execute(
        finished_counts.insert().from_select(
            ["day", "lane", "state", "jobs"],
            sa.select(day, jobs.c.lane, jobs.c.state, sa.func.count())
            .where(sa.text(TERMINAL_CLAUSE))
            .group_by(day, jobs.c.lane, jobs.c.state),
        )
    )
