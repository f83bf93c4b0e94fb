"""`queuebot run` with no Slack credentials: the local sandbox workspace takes Slack's place.

The sandbox (`sandbox.server`) serves Slack's Web API and a web page on SANDBOX_PORT; the bot is served
exactly as for Slack (`bot.app.serve`), only with the sandbox's token, signing secret and API URL. Where
queuebot.toml names no admins, channel, backup or ladder, the sandbox's seeded people fill those roles,
and a new database gets a little demo work, so the page has something to act on at once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from bot import app
from bot.engine import Engine
from bot.settings import Config, LadderConfig, LadderLevel, Settings
from bot.slack_app import EVENTS_PATH
from sandbox.server import SandboxServer
from sandbox.workspace import DEFAULT_USERS
from store.errors import ConfigError
from store.models import Job

DEFAULT_SANDBOX_PORT = 3100
#: The sandbox has no sign-in: it listens on this machine only.
SANDBOX_HOST = "127.0.0.1"
#: The seeded workspace's people, in the roles the sandbox gives them.
OWNER, ADMIN = "UOWNER0001", "UADMIN0001"
QUEUE_CHANNEL = "C0QUEUE001"
#: A ladder that climbs within minutes, so a newcomer sees every level before the demo work expires.
SANDBOX_LADDER = LadderConfig(
    levels=[
        LadderLevel(after=0.0, notify=["owner"]),
        LadderLevel(after=60.0, notify=["backup"]),
        LadderLevel(after=180.0, notify=["channel"]),
    ]
)
#: Idempotency keys of the demo work carry this prefix, so no restart enqueues it twice.
DEMO_KEY_PREFIX = "sandbox-demo:"
#: (key, job type, input): a decision, a review item, and a job missing its input that will escalate.
DEMO_WORK: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("ask", "demo.ask", {"question": "Send the new onboarding email to all customers today?"}),
    (
        "review",
        "demo.review",
        {
            "text": "Hi Sam, thanks for your patience. Your refund of $42.00 was sent today and should "
            "reach your card within 5 business days. — The Support Team"
        },
    ),
    ("triage", "demo.triage", {}),  # pending (no ticket); past its 2-minute SLA it climbs the ladder
)


def sandbox_port() -> int:
    """SANDBOX_PORT, or the default."""
    raw = os.environ.get("SANDBOX_PORT", "").strip()
    if not raw:
        return DEFAULT_SANDBOX_PORT
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"environment variable SANDBOX_PORT: {raw!r} is not a port number")
    return int(raw)


def sandbox_config(config: Config) -> Config:
    """The config with the sandbox's people in the roles queuebot.toml leaves unset."""
    fill: dict[str, object] = {}
    if not config.admins:
        fill["admins"] = [OWNER, ADMIN]
    if config.default_channel is None:
        fill["default_channel"] = QUEUE_CHANNEL
    if config.backup is None:
        fill["backup"] = ADMIN
    if "ladders" not in config.model_fields_set:
        fill["ladders"] = {"default": SANDBOX_LADDER}
    return config.model_copy(update=fill)


def roles(config: Config) -> dict[str, str]:
    """A line per seeded person, shown under the page's user switcher."""
    described: dict[str, str] = {}
    for user in DEFAULT_USERS:
        parts = ["workspace owner"] if user.is_owner else []
        if user.id in config.admins:
            parts.append("queuebot admin: answers anything, cancels, pauses")
        if user.id == config.backup:
            parts.append("escalation backup")
        parts += [f"group {name}" for name, members in config.groups.items() if user.id in members]
        if user.id == OWNER:
            parts.append("owns the demo work")
        described[user.id] = " · ".join(parts) or "no rights: answers only what anyone may"
    return described


def open_in_browser(url: str) -> None:
    """Open the page for a person at a terminal on a desktop; never in scripts, CI, or over SSH (where
    Python would fall back to a text browser that takes over the terminal). SANDBOX_OPEN_BROWSER=0 stops
    it."""
    if os.environ.get("SANDBOX_OPEN_BROWSER", "1") == "0" or os.environ.get("CI") or not sys.stdout.isatty():
        return
    if sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        # A thread of its own: a browser that is slow to start must not hold up the bot, or its exit.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def state_file(database_url: str) -> Path:
    """Where the sandbox keeps its conversations: beside a SQLite database, else in the current directory."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).with_suffix(".sandbox.json")
    return Path("queuebot.sandbox.json")


async def seed_demo_work(engine: Engine) -> list[Job]:
    """Enqueue the demo work (in one transaction, each with an idempotency key); the jobs created."""
    new_jobs = [
        engine.new_job(type_name, data, key=DEMO_KEY_PREFIX + key, owner=OWNER, channel=QUEUE_CHANNEL)
        for key, type_name, data in DEMO_WORK
    ]
    enqueued = await engine.enqueue_many(new_jobs, actor="sandbox")
    return [item.job for item in enqueued if item.created]


async def run_sandbox(
    engine: Engine,
    settings: Settings,
    *,
    missing: Sequence[str],
    announce: Callable[[str], None],
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the sandbox workspace and the bot against it until stopped (Ctrl-C, SIGTERM or `stop`)."""
    engine = Engine(engine.store, sandbox_config(engine.config), types=engine.types, wakeup=engine.wakeup)
    # A new database starts a new workspace: conversations kept from an old one would name unknown jobs.
    fresh = not await engine.store.jobs.list(limit=1)
    saved = state_file(settings.database_url)
    if fresh:
        saved.unlink(missing_ok=True)
    server = SandboxServer(
        bot_url=f"http://127.0.0.1:{settings.port}{EVENTS_PATH}",
        host=SANDBOX_HOST,
        port=sandbox_port() if port is None else port,
        state_file=saved,
        roles=roles(engine.config),
        start_conversation=engine.config.default_channel,
    )
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the sandbox workspace on {SANDBOX_HOST}:{server.fake.port}: {exc.strerror or exc} "
            "(set SANDBOX_PORT to a free port)"
        ) from None
    try:
        seeded = await seed_demo_work(engine) if fresh else []
        announce(
            f"queuebot sandbox workspace: {server.url} — no Slack credentials set ({' and '.join(missing)} "
            "missing), so queuebot serves a local Slack workspace instead. Open it in a browser to create "
            "work, answer decisions and watch escalations arrive. Ctrl-C stops."
        )
        if seeded:
            announce("demo work: " + ", ".join(f"{job.ref} {job.type}" for job in seeded))
        open_in_browser(server.url)
        bot_settings = settings.model_copy(
            update={
                "slack_bot_token": server.token,
                "slack_signing_secret": server.signing_secret,
                "slack_api_url": server.api_url,
                "slack_app_token": None,  # the sandbox delivers over HTTP
            }
        )
        await app.serve(engine, bot_settings, stop=stop)
    finally:
        await server.close()
