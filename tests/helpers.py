"""Helpers for tests: run the worker until the queue is idle, wait for a condition by polling, run the whole
bot as `queuebot run` does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp

from bot import app
from bot.engine import Engine
from bot.runtime import Worker
from bot.settings import Settings
from scheduler.service import Scheduler
from store.models import Job
from store.states import JobState

#: The longest any test waits for the queue to settle.
SETTLE_TIMEOUT_S = 30.0


async def drain(engine: Engine, *, rules: bool = True, timeout_s: float = SETTLE_TIMEOUT_S) -> Worker:
    """Run a worker (and the time rules each poll) until nothing is ready, running or due."""
    worker = Worker(engine)
    stop = asyncio.Event()
    scheduler = Scheduler(engine)

    async def tick() -> None:
        while not stop.is_set():
            await scheduler.run_once()
            await asyncio.sleep(engine.config.scheduler.tick_s)

    ticker = asyncio.create_task(tick()) if rules else None
    try:
        await asyncio.wait_for(worker.run(until_idle=True), timeout_s)
    finally:
        stop.set()
        if ticker is not None:
            await ticker
    return worker


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = SETTLE_TIMEOUT_S, interval_s: float = 0.02
) -> None:
    """Poll until `condition` holds; fail with a timeout otherwise."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval_s)


async def wait_for_state(
    engine: Engine, job_id: int, state: JobState, timeout_s: float = SETTLE_TIMEOUT_S
) -> Job:
    async def reached() -> bool:
        return (await engine.store.jobs.get(job_id)).state is state

    await wait_for(reached, timeout_s=timeout_s)
    return await engine.store.jobs.get(job_id)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_bot(engine: Engine, settings: Settings) -> AsyncIterator[str]:
    """`queuebot run`'s serve loop (Slack, outbox, workers, scheduler) until the block ends; yields its base
    URL once /healthz answers."""
    stop = asyncio.Event()
    running = asyncio.create_task(app.serve(engine, settings, stop=stop))
    base_url = f"http://127.0.0.1:{settings.port}"

    async def up() -> bool:
        if running.done():
            running.result()  # serve() failed: raise its error instead of waiting out the timeout
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base_url}/healthz") as health:
                return health.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_for(up, timeout_s=10)
        yield base_url
    finally:
        stop.set()
        await running
