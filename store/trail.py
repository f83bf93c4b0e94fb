"""Writing the evidence trail and the outbox inside a caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.models import Event, Notification
from store.schema import events, outbox
from store.states import JobState


def event_row(
    job_id: int,
    *,
    at: datetime,
    actor: str,
    kind: str,
    from_state: JobState | None = None,
    to_state: JobState | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    decision_id: int | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "decision_id": decision_id,
        "at": at,
        "actor": actor,
        "kind": kind,
        "from_state": from_state.value if from_state else None,
        "to_state": to_state.value if to_state else None,
        "reason": reason,
        "details": details,
    }


async def insert_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Append events; a no-op for an empty list."""
    if rows:
        await conn.execute(events.insert(), list(rows))


async def insert_notifications(conn: AsyncConnection, notes: Sequence[Notification], at: datetime) -> None:
    """Queue notifications; one already queued under the same dedup key is left as it is."""
    if not notes:
        return
    rows = [
        {
            "dedup_key": note.dedup_key,
            "kind": note.kind,
            "job_id": note.job_id,
            "decision_id": note.decision_id,
            "target": note.target,
            "payload": note.payload,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
        }
        for note in notes
    ]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(insert(outbox).on_conflict_do_nothing(index_elements=["dedup_key"]), rows)


async def read_events(conn: AsyncConnection, job_id: int) -> list[Event]:
    result = await conn.execute(sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id))
    return [Event.model_validate(dict(row._mapping)) for row in result]
