"""Reading and settling the outbox; rows are written by transitions (store.trail)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from store import clock
from store.database import Database
from store.models import OutboxItem
from store.schema import outbox


class OutboxRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def due(self, *, limit: int = 100) -> list[OutboxItem]:
        """Pending notifications whose next attempt has come, oldest first."""
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(outbox)
                .where(outbox.c.state == "pending", outbox.c.next_attempt_at <= clock.now())
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [OutboxItem.model_validate(dict(row._mapping)) for row in result]

    async def all(self, *, kind: str | None = None) -> list[OutboxItem]:
        query = sa.select(outbox).order_by(outbox.c.id)
        if kind is not None:
            query = query.where(outbox.c.kind == kind)
        async with self.db.read() as conn:
            return [OutboxItem.model_validate(dict(row._mapping)) for row in await conn.execute(query)]

    async def mark_sent(self, item_id: int, response: dict[str, Any] | None = None) -> bool:
        """Settle a delivered row; False if another process settled it first."""
        async with self.db.write() as conn:
            result = await conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id, outbox.c.state == "pending")
                .values(state="sent", sent_at=clock.now(), response=response)
                .returning(outbox.c.id)
            )
            return result.first() is not None

    async def retry_later(self, item_id: int, *, delay_s: float, error: str, max_attempts: int = 10) -> None:
        """Record a failed delivery; after `max_attempts` the row is parked as failed."""
        async with self.db.write() as conn:
            await conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id, outbox.c.state == "pending")
                .values(
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=clock.now() + timedelta(seconds=delay_s),
                    error=error,
                    state=sa.case((outbox.c.attempts + 1 >= max_attempts, "failed"), else_="pending"),
                )
            )
