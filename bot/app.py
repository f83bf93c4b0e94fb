"""The composition root: settings → config → job types → store → engine, and the worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.engine import Engine
from bot.jobtypes import load_job_modules, registry
from bot.runtime import Worker
from bot.settings import Config, Settings, load_config
from bot.wakeup import PostgresListener, Wakeup
from scheduler.service import Scheduler
from store import Store

log = logging.getLogger("queuebot")


def load(settings: Settings | None = None) -> tuple[Settings, Config]:
    settings = settings or Settings()
    config = load_config(settings.queuebot_config)
    load_job_modules(config.job_modules)
    return settings, config


@asynccontextmanager
async def open_engine(settings: Settings | None = None, *, migrate: bool = True) -> AsyncIterator[Engine]:
    """An engine on a migrated database; the connection pool closes on exit."""
    settings, config = load(settings)
    store = Store.connect(settings.database_url)
    try:
        if migrate:
            await store.migrate()
        yield Engine(store, config, types=registry, wakeup=Wakeup())
    finally:
        await store.close()


async def work(engine: Engine, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> Worker:
    """Run workers and the scheduler together until stopped (or idle)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    listener = PostgresListener(engine.store, engine.wakeup)
    await listener.start()
    scheduler = Scheduler(engine)
    await scheduler.run_once()  # catch up at once: orphans from a crash, due retries, timeouts
    scheduler.start()
    worker = Worker(engine)
    log.info("event=worker_started worker=%s lanes=%s", worker.worker_id, engine.config.lanes)
    try:
        await worker.run(until_idle=until_idle, stop=stop)
    finally:
        await scheduler.stop()
        await listener.stop()
    return worker
