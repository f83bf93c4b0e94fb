"""The Slack side of the fault-injection suite: the workspace of tests/slack_workspace.py, and a snapshot
of every table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.engine import Engine
from sandbox.fake_slack import FakeSlack
from store.schema import metadata
from tests.slack_workspace import Workspace, serve_bot

CHANNEL = "C0QUEUE001"
OWNER = "UOWNER0001"


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
