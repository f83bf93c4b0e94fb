"""Waking idle workers: directly within a process, by LISTEN/NOTIFY across PostgreSQL replicas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from store import Store
from store.jobs import NOTIFY_CHANNEL
from store.models import Job

log = logging.getLogger("queuebot.wakeup")


class HandOff(Protocol):
    """A worker of this process offering to take jobs enqueued here on a lane directly, while it has a free
    slot: the enqueue writes the job already claimed by it, one round trip instead of an enqueue and then a
    claim."""

    worker_id: str

    def reserve(self) -> bool:
        """Hold a slot for the job about to come; False when the worker can take none now."""

    def start(self, job: Job) -> None:
        """Run the job the enqueue claimed for this worker."""

    def release(self) -> None:
        """The offer was taken but no job came of it (paused, keyed duplicate, work waiting ahead)."""


#: Longest background work (a claim, a delivery round, a click's work after its ack) waits for the Slack
#: requests in flight to be answered. A burst of requests is answered in a fraction of it; a request stuck
#: on something slow holds the workers back no longer than this per claim.
HOLD_BACK_FOR_PEOPLE_S = 0.25


#: Requests in flight beyond which the bot is answering a crowd: a slash command is then acknowledged at
#: once and its reply sent after (handlers/commands.py).
CROWDED_ABOVE = 8


class Foreground:
    """Requests a person waits on (Slack gives the bot 3 s to answer) in flight in this process. Background
    work waits for them before it starts, for a moment: on one event loop every callback takes its turn, so
    a burst of clicks and commands is answered sooner when no new batch of jobs, delivery round or click's
    follow-up work starts in between."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def crowded(self) -> bool:
        """More requests in flight than a few people (or Slack's retries of one request) make at once."""
        return self.in_flight > CROWDED_ABOVE

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around a request, from its arrival until its answer is written."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            for besides, waiter in self._waiters:
                if self.in_flight <= besides and not waiter.done():
                    waiter.set_result(None)

    async def wait_quiet(self, timeout_s: float = HOLD_BACK_FOR_PEOPLE_S, *, besides: int = 0) -> None:
        """Return once at most `besides` requests are in flight (a listener counts its own), or after
        `timeout_s`."""
        if self.in_flight <= besides:
            return
        entry = (besides, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry[1], timeout_s)
        finally:
            self._waiters.remove(entry)


class Wakeup:
    """One event per lane; setting it wakes that lane's claim loop at once. Workers of this process also
    leave their hand-off offers here, for enqueues of this process, and see what people wait on."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._offers: dict[str, list[HandOff]] = {}
        self.foreground = Foreground()

    def event(self, lane: str) -> asyncio.Event:
        return self._events.setdefault(lane, asyncio.Event())

    def notify(self, lane: str) -> None:
        self.event(lane).set()

    def notify_all(self) -> None:
        for event in self._events.values():
            event.set()

    def offer(self, lane: str, hand_off: HandOff) -> None:
        self._offers.setdefault(lane, []).append(hand_off)

    def withdraw(self, lane: str, hand_off: HandOff) -> None:
        with contextlib.suppress(ValueError):
            self._offers.get(lane, []).remove(hand_off)

    def take_offer(self, lane: str) -> HandOff | None:
        """A worker's offer for `lane` with a slot now held for the job, if any worker has one free."""
        for hand_off in self._offers.get(lane, ()):
            if hand_off.reserve():
                return hand_off
        return None


async def wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    """Return when any of the events is set, or after `timeout_s`."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


#: How often the listener checks that its connection is still there, and retries when it is not.
RELISTEN_CHECK_S = 1.0


class PostgresListener:
    """Holds one connection that LISTENs for new work from other replicas, and opens a new one when the
    database drops it (a restart, a terminated backend): without it other replicas' work would wait for
    the next poll."""

    def __init__(self, store: Store, wakeup: Wakeup, *, check_every_s: float = RELISTEN_CHECK_S) -> None:
        self.store = store
        self.wakeup = wakeup
        self.check_every_s = check_every_s
        self.connections_opened = 0
        self._conn: Any = None
        self._driver: Any = None
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.store.db.is_postgres:
            return
        await self._listen()
        self._keeper = asyncio.create_task(self._keep_listening(), name="listen")

    async def _listen(self) -> None:
        try:
            self._conn = await self.store.db.engine.connect()
            raw = await self._conn.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
            self.connections_opened += 1
        except Exception as exc:  # polling still finds the work; LISTEN only makes it faster
            log.warning("event=listen_failed error=%s", exc)
            await self._close()

    async def _keep_listening(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            if self._driver is not None and not self._driver.is_closed():
                continue
            await self._close()
            await self._listen()
            if self._driver is not None:
                log.info("event=listen_restored")
                self.wakeup.notify_all()  # work announced while nobody listened is claimed now

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, lane: str) -> None:
        self.wakeup.notify(lane)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self._close()

    async def _close(self) -> None:
        self._driver = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                # Discarded rather than pooled: it carries our listener, or the database already dropped it.
                await conn.invalidate()
                await conn.close()
            except Exception as exc:  # the connection may already be gone with the database
                log.debug("event=listen_close_failed error=%s", exc)
