"""The outbox: notifications written with their transitions, delivered once, retried with backoff."""

from __future__ import annotations

from typing import Any

from bot.engine import Engine
from tests.helpers import drain


async def test_notifications_are_due_once_and_settle_once(engine: Engine) -> None:
    await engine.enqueue("demo.ask", {"question": "Ship?"}, channel="CQUEUE")
    await drain(engine)
    [item] = await engine.store.outbox.due()
    assert (item.kind, item.target, item.dedup_key) == ("decision.opened", "CQUEUE", "decision:1:opened")
    assert await engine.store.outbox.mark_sent(item.id, {"ts": "1700000000.000100"}) is True
    assert await engine.store.outbox.mark_sent(item.id) is False  # another replica already sent it
    assert await engine.store.outbox.due() == []
    [sent] = await engine.store.outbox.all()
    assert sent.state == "sent" and sent.response == {"ts": "1700000000.000100"}


async def test_a_failed_delivery_waits_then_parks_after_its_attempts(
    engine: Engine, frozen_clock: Any
) -> None:
    await engine.enqueue("demo.ask", {"question": "Ship?"}, channel="CQUEUE")
    await drain(engine)
    [item] = await engine.store.outbox.lease_due()
    assert item.attempts == 1  # a lease is a try
    await engine.store.outbox.retry_later(item.id, delay_s=30, error="ratelimited", max_attempts=2)
    assert await engine.store.outbox.due() == []
    frozen_clock.tick(31)
    [again] = await engine.store.outbox.lease_due()
    assert (again.attempts, again.error) == (2, "ratelimited")
    await engine.store.outbox.retry_later(item.id, delay_s=30, error="still failing", max_attempts=2)
    frozen_clock.tick(31)
    assert await engine.store.outbox.due() == []
    [parked] = await engine.store.outbox.all()
    assert (parked.state, parked.attempts) == ("failed", 2)


async def test_two_senders_leasing_at_once_never_take_the_same_row(engine: Engine) -> None:
    from store import Store

    for n in range(12):
        await engine.enqueue("demo.ask", {"question": f"Q{n}?"}, channel="CQUEUE")
    await drain(engine)
    other = Store.connect(engine.store.db.url)
    try:
        import asyncio

        first, second = await asyncio.gather(
            engine.store.outbox.lease_due(limit=8), other.outbox.lease_due(limit=8)
        )
    finally:
        await other.close()
    ids = [item.id for item in first + second]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert await engine.store.outbox.lease_due() == []  # all leased: nothing due until the leases run out
