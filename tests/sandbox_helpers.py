"""The sandbox workspace with queuebot running against it, in this process, driven over real HTTP as the web
page drives it: what `queuebot run` does with no Slack credentials, on a test's own SQLite file."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.engine import Engine
from bot.jobtypes import Registry
from bot.sandbox_run import run_sandbox
from bot.settings import Settings
from bot.wakeup import Wakeup
from store import Store
from tests.conftest import fast_config
from tests.helpers import free_port, wait_for

QUEUE = "C0QUEUE001"
OWNER, ADMIN, REVIEWER, GUEST = "UOWNER0001", "UADMIN0001", "UREVIEW001", "UGUEST0001"


@dataclass
class Sandbox:
    """A running sandbox and bot; methods are the page's own requests."""

    url: str
    bot_url: str
    engine: Engine
    http: aiohttp.ClientSession
    announced: list[str] = field(default_factory=list)

    async def state(self, user: str, conversation: str | None = QUEUE) -> dict[str, Any]:
        params = {"user": user, **({"conversation": conversation} if conversation else {})}
        async with self.http.get(f"{self.url}/sandbox/api/state", params=params) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.url}/sandbox/api/{path}", json=body) as response:
            answer: dict[str, Any] = await response.json()
            answer["status"] = response.status
            return answer

    async def messages(self, user: str, conversation: str = QUEUE) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (await self.state(user, conversation))["conversation"]["messages"]
        return messages

    async def wait_for_message(
        self, user: str, found: Callable[[dict[str, Any]], bool], conversation: str = QUEUE
    ) -> dict[str, Any]:
        """Poll the page's state until a message of the conversation matches."""
        matches: list[dict[str, Any]] = []

        async def seen() -> bool:
            matches[:] = [m for m in await self.messages(user, conversation) if found(m)]
            return bool(matches)

        await wait_for(seen)
        return matches[-1]


def sqlite_engine(template: Path, tmp_path: Path, types: Registry) -> tuple[Engine, str]:
    """An engine on a copy of the migrated SQLite template, and that file's database URL."""
    path = tmp_path / "queuebot.db"
    if not path.exists():
        shutil.copy(template, path)
    url = f"sqlite:///{path}"
    return Engine(Store.connect(url), fast_config(), types=types, wakeup=Wakeup()), url


@asynccontextmanager
async def running_sandbox(engine: Engine, database_url: str) -> AsyncIterator[Sandbox]:
    """`run_sandbox` on free ports, until the block ends; yields once the page and the bot answer."""
    port, bot_port = free_port(), free_port()
    announced: list[str] = []
    stop = asyncio.Event()
    settings = Settings(database_url=database_url, port=bot_port)
    running = asyncio.create_task(
        run_sandbox(
            engine, settings, missing=["SLACK_BOT_TOKEN"], announce=announced.append, port=port, stop=stop
        )
    )
    async with aiohttp.ClientSession() as http:
        sandbox = Sandbox(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bot_port}", engine, http, announced)

        async def up() -> bool:
            if running.done():
                running.result()  # raises what stopped it
            try:
                async with http.get(f"{sandbox.bot_url}/healthz") as bot, http.get(sandbox.url) as page:
                    return bot.status == 200 and page.status == 200
            except aiohttp.ClientConnectionError:
                return False

        try:
            await wait_for(up)
            yield sandbox
        finally:
            stop.set()
            await running
