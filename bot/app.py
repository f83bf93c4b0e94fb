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
from store.errors import ConfigError

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


def missing_slack_settings(settings: Settings) -> list[str]:
    """The environment variables `queuebot run` needs to serve Slack and does not have. Over Socket Mode
    (SLACK_APP_TOKEN set) no signing secret is needed: the WebSocket is opened with the app token."""
    needed = [("SLACK_BOT_TOKEN", settings.slack_bot_token)]
    if not settings.slack_app_token:
        needed.append(("SLACK_SIGNING_SECRET", settings.slack_signing_secret))
    return [name for name, value in needed if not value]


async def serve(engine: Engine, settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve Slack (at /slack/events on PORT, or over Socket Mode when SLACK_APP_TOKEN is set), deliver the
    outbox, and run workers and the scheduler. /healthz and /metrics are served on PORT either way."""
    from aiohttp import web
    from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

    from bot.delivery import OutboxDelivery, delivery_client
    from bot.slack_app import create_slack_app, create_web_app

    assert settings.slack_bot_token and not missing_slack_settings(settings)
    socket_mode = bool(settings.slack_app_token)
    stop = stop or asyncio.Event()
    delivery = OutboxDelivery(engine, delivery_client(settings.slack_bot_token, settings.slack_api_url))
    slack = create_slack_app(
        engine,
        token=settings.slack_bot_token,
        signing_secret=None if socket_mode else settings.slack_signing_secret,
        api_url=settings.slack_api_url,
        after_change=delivery.wake.set,
    )
    runner = web.AppRunner(
        create_web_app(
            slack, engine, signing_secret=settings.slack_signing_secret, serve_events=not socket_mode
        )
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", settings.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot serve on port {settings.port}: {exc.strerror or exc} (set PORT to a free port)"
        ) from None
    socket: AsyncSocketModeHandler | None = None
    if settings.slack_app_token:
        socket = AsyncSocketModeHandler(slack, settings.slack_app_token)
        await socket.connect_async()  # type: ignore[no-untyped-call]  # slack_bolt leaves it untyped
        log.warning("event=serving mode=socket port=%d paths=/healthz,/metrics", settings.port)
    else:
        log.warning("event=serving mode=http port=%d path=/slack/events", settings.port)
    sender = asyncio.create_task(delivery.run(stop))
    try:
        await work(engine, stop=stop)
    finally:
        stop.set()
        await sender
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]
        await runner.cleanup()
