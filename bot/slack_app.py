"""The Slack surface: a Bolt AsyncApp served by aiohttp at POST /slack/events (or over Socket Mode), plus
/healthz and /metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.async_app import AsyncApp

from bot.delivery import web_client
from bot.early_ack import EarlyAck
from bot.engine import Engine
from bot.metrics import Metrics
from handlers import actions, commands, events, new_job_modal

EVENTS_PATH = "/slack/events"


def create_slack_app(
    engine: Engine,
    *,
    token: str,
    signing_secret: str | None,
    api_url: str | None,
    after_change: Callable[[], None] | None = None,
) -> AsyncApp:
    """The Bolt app with queuebot's listeners; its Web API client honours Slack's rate limits.

    With no signing secret the app takes requests over Socket Mode only, where Slack's WebSocket is
    authenticated by the app-level token instead of a signature."""
    app = AsyncApp(
        client=web_client(token, api_url),
        signing_secret=signing_secret or "",
        request_verification_enabled=signing_secret is not None,
    )
    # Bolt tries listeners in the order they were added, at a cost per listener: /queue, the most common
    # request after a decision's buttons, goes first.
    commands.register(app, engine, after_change=after_change)
    actions.register(app, engine, after_change=after_change)
    events.register(app, engine)
    new_job_modal.register(app, engine)
    return app


def create_web_app(
    app: AsyncApp, engine: Engine, *, signing_secret: str | None = None, serve_events: bool = True
) -> web.Application:
    """aiohttp application: Slack's requests at /slack/events (unless they come over Socket Mode), /healthz
    and Prometheus /metrics. With the signing secret, requests that need no answer are acknowledged before
    Bolt parses them (bot.early_ack)."""
    web_app = app.web_app(path=EVENTS_PATH) if serve_events else web.Application()
    foreground = engine.wakeup.foreground

    @web.middleware
    async def people_first(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != EVENTS_PATH:
            return await handler(request)
        with foreground.serving():  # workers hold back new claims meanwhile (bot.wakeup.Foreground)
            return await handler(request)

    web_app.middlewares.append(people_first)
    if serve_events and signing_secret:
        web_app.middlewares.append(EarlyAck(app, signing_secret, foreground, EVENTS_PATH).__call__)
    web_app.router.add_get("/metrics", Metrics(engine).handle)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    web_app.router.add_get("/healthz", healthz)
    return web_app
