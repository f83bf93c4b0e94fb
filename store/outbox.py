"""Reading and settling the outbox; rows are written by transitions (store.trail)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from store import clock
from store.database import Database, picked_ids
from store.models import OutboxItem
from store.schema import outbox

#: How long a row that must follow an unsent earlier message waits before it is looked at again.
WAIT_FOR_EARLIER_S = 0.5


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

    async def lease_due(self, *, limit: int = 50, lease_s: float = 60.0) -> list[OutboxItem]:
        """Take due notifications for delivery: their next attempt moves `lease_s` ahead, so another
        replica does not send them meanwhile (SKIP LOCKED on PostgreSQL); a crashed sender's lease runs
        out and the rows are due again. `attempts` counts the leases, this one included."""
        now = clock.now()
        pick = (
            sa.select(outbox.c.id)
            .where(outbox.c.state == "pending", outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        async with self.db.write() as conn:
            result = await conn.execute(
                outbox.update()
                .where(picked_ids(pick, self.db.dialect), outbox.c.state == "pending")
                # Each lease counts as a try: a row leased again after a crash shows that an earlier try
                # may have reached Slack, so the sender checks before posting again.
                .values(next_attempt_at=now + timedelta(seconds=lease_s), attempts=outbox.c.attempts + 1)
                .returning(*outbox.c)
            )
            items = [OutboxItem.model_validate(dict(row._mapping)) for row in result]
        return sorted(items, key=lambda item: item.id)

    async def retry_at_once(self, item_id: int) -> None:
        """Hand a leased row back without counting an attempt (it waits on an earlier message)."""
        async with self.db.write() as conn:
            await conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id, outbox.c.state == "pending")
                .values(
                    next_attempt_at=clock.now() + timedelta(seconds=WAIT_FOR_EARLIER_S),
                    attempts=outbox.c.attempts - 1,
                )
            )

    async def pending_for_decision(self, decision_id: int, kind: str) -> bool:
        async with self.db.read() as conn:
            found = await conn.scalar(
                sa.select(outbox.c.id)
                .where(
                    outbox.c.decision_id == decision_id, outbox.c.kind == kind, outbox.c.state == "pending"
                )
                .limit(1)
            )
        return found is not None

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
        """Record a failed delivery of a leased row; once it has had `max_attempts` tries it is parked as
        failed (`max_attempts=0` parks it at once)."""
        async with self.db.write() as conn:
            await conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id, outbox.c.state == "pending")
                .values(
                    next_attempt_at=clock.now() + timedelta(seconds=delay_s),
                    error=error,
                    state=sa.case((outbox.c.attempts >= max_attempts, "failed"), else_="pending"),
                )
            )
