"""The bot's real aiohttp app with its Bolt listeners on a free port, the fake Slack it calls, signed requests
as Slack sends them, and the outbox delivery: the workspace the Slack tests act in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import OutboxDelivery, delivery_client
from bot.engine import Engine
from bot.slack_app import EVENTS_PATH, create_slack_app, create_web_app
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from tests.helpers import free_port


@dataclass
class Workspace:
    fake: FakeSlack
    slack: SignedRequests
    delivery: OutboxDelivery
    base_url: str

    async def deliver(self) -> None:
        """Send every due outbox row."""
        while await self.delivery.deliver_due():
            pass


@asynccontextmanager
async def serve_bot(
    engine: Engine, fake: FakeSlack, client: AsyncWebClient | None = None
) -> AsyncIterator[Workspace]:
    """The bot's web app against `fake`, with an outbox delivery on `client` (by default the bot's own)."""
    app = create_slack_app(engine, token=fake.token, signing_secret=fake.signing_secret, api_url=fake.api_url)
    runner = web.AppRunner(create_web_app(app, engine, signing_secret=fake.signing_secret))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with SignedRequests(fake, f"http://127.0.0.1:{port}{EVENTS_PATH}") as slack:
            delivery = OutboxDelivery(engine, client or delivery_client(fake.token, fake.api_url))
            yield Workspace(fake, slack, delivery, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
