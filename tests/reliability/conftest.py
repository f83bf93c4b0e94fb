"""The Slack side of the fault-injection suite: the bot's real aiohttp app with its Bolt listeners, served on
a free port, the fake Slack it calls, signed requests as Slack sends them, and the outbox delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import OutboxDelivery, delivery_client
from bot.engine import Engine
from bot.slack_app import EVENTS_PATH, create_slack_app, create_web_app
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from store.schema import metadata
from tests.reliability.processes import free_port

CHANNEL = "C0QUEUE001"
OWNER = "UOWNER0001"


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


@pytest.fixture
async def workspace(engine: Engine) -> AsyncIterator[Workspace]:
    async with FakeSlack() as fake:
        async with serve_bot(engine, fake) as served:
            yield served


async def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: compared before and after a request that must change nothing."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.store.db.read() as conn:
        for table in metadata.sorted_tables:
            rows = await conn.execute(table.select())
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables
