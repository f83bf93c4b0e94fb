"""Waking idle workers: directly within a process, by LISTEN/NOTIFY across PostgreSQL replicas."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from store import Store
from store.jobs import NOTIFY_CHANNEL

log = logging.getLogger("queuebot.wakeup")


class Wakeup:
    """One event per lane; setting it wakes that lane's claim loop at once."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, lane: str) -> asyncio.Event:
        return self._events.setdefault(lane, asyncio.Event())

    def notify(self, lane: str) -> None:
        self.event(lane).set()

    def notify_all(self) -> None:
        for event in self._events.values():
            event.set()


async def wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    """Return when any of the events is set, or after `timeout_s`."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class PostgresListener:
    """Holds one connection that LISTENs for new work from other replicas."""

    def __init__(self, store: Store, wakeup: Wakeup) -> None:
        self.store = store
        self.wakeup = wakeup
        self._conn: Any = None

    async def start(self) -> None:
        if not self.store.db.is_postgres:
            return
        try:
            self._conn = await self.store.db.engine.connect()
            raw = await self._conn.get_raw_connection()
            await raw.driver_connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:  # polling still finds the work; LISTEN only makes it faster
            log.warning("event=listen_failed error=%s", exc)
            await self.stop()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, lane: str) -> None:
        self.wakeup.notify(lane)

    async def stop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except Exception as exc:  # the connection may already be gone with the database
                log.debug("event=listen_close_failed error=%s", exc)
