"""The sandbox workspace for people: on one local port, Slack's Web API and response URLs (the fake, with
Slack's steady per-method rate limits) and the web page where people use the app as they would in Slack.

    server = SandboxServer(bot_url="http://127.0.0.1:3000/slack/events", port=3100)
    await server.start()   # the app calls server.api_url with server.token; requests are signed with
                           # server.signing_secret
    ...
    await server.close()

With a `state_file`, conversations and Home tabs survive a restart: the file is written shortly after each
change and read back on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiohttp import web

from sandbox.fake_slack import FakeSlack
from sandbox.faults import SLACK_LIMITS, SteadyLimit
from sandbox.interactions import ACK_TIMEOUT_S, EVENT_RETRY_DELAYS_S, Interactions
from sandbox.page import Page

log = logging.getLogger("queuebot.sandbox")

#: Changes are saved this long after the first unsaved one, so a burst of changes is one write.
SAVE_DELAY_S = 0.5
#: How long to wait for a change before looking again whether the server is closing.
SAVE_POLL_S = 30.0
#: The recorded Web API calls kept: tests inspect them, a long-running sandbox must not grow forever.
MAX_KEPT_CALLS = 5000
#: Requests still running at shutdown (event streams end at once) get this long.
SHUTDOWN_TIMEOUT_S = 5.0


class SandboxServer:
    """The fake Slack and its page on one port; people's actions are delivered to the app at `bot_url`."""

    def __init__(
        self,
        *,
        bot_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        roles: Mapping[str, str] | None = None,
        start_conversation: str | None = None,
        steady_limits: Mapping[str, SteadyLimit] = SLACK_LIMITS,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        event_retry_delays_s: Sequence[float] = EVENT_RETRY_DELAYS_S,
    ) -> None:
        self.fake = FakeSlack(host=host, port=port, steady_limits=steady_limits)
        self.interactions = Interactions(
            self.fake, bot_url, ack_timeout_s=ack_timeout_s, event_retry_delays_s=event_retry_delays_s
        )
        self.page = Page(self.fake, self.interactions, roles=roles, start_conversation=start_conversation)
        self.state_file = state_file
        self.app = web.Application()
        self.app.add_routes([*self.fake.routes(), *self.page.routes()])
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self._saved_version = -1
        self._closing = False

    @property
    def url(self) -> str:
        """The page, e.g. "http://127.0.0.1:3100"."""
        return self.fake.url

    @property
    def api_url(self) -> str:
        """The Web API base URL for the app (SLACK_API_URL)."""
        return self.fake.api_url

    @property
    def token(self) -> str:
        """The bot token the app must use (SLACK_BOT_TOKEN)."""
        return self.fake.token

    @property
    def signing_secret(self) -> str:
        """The secret requests to the app are signed with (SLACK_SIGNING_SECRET)."""
        return self.fake.signing_secret

    async def start(self) -> SandboxServer:
        """Restore the saved workspace, if any, and start serving (port 0 picks a free one)."""
        if self.state_file is not None:
            self._restore(self.state_file)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.fake.host, self.fake.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        # Response URLs and the API URL are built from the fake's address: make it the one served.
        self.fake.port = int(runner.addresses[0][1])
        self._saved_version = self.fake.version
        self._saver = asyncio.create_task(self._keep_saving())
        return self

    async def close(self) -> None:
        """Stop serving, after saving the workspace one last time."""
        # The saver is told to finish rather than cancelled: on Python 3.11 `asyncio.wait_for` can swallow a
        # cancellation that arrives as the condition it waits on is notified.
        self._closing = True
        await self.page.close()
        if self._saver is not None:
            await self._saver
            self._saver = None
        if self.fake.version != self._saved_version:
            await self._save()
        await self.interactions.close()
        await self.fake.close()  # serves nothing itself here, but closes what it holds
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- keeping the workspace across restarts ---------------------------------------------------
    def _restore(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("event=sandbox_state_unreadable path=%s error=%s", path, exc)
            return
        try:
            self.fake.workspace.restore(saved)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # not a state this sandbox wrote
            log.warning("event=sandbox_state_unreadable path=%s error=%r", path, exc)

    async def _keep_saving(self) -> None:
        """Save shortly after each change, until closing (which saves once more)."""

        def unsaved() -> bool:
            return self.fake.version != self._saved_version or self._closing

        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await self.fake.wait_for(unsaved, timeout=SAVE_POLL_S)
            if self._closing or self.fake.version == self._saved_version:
                continue
            await asyncio.sleep(SAVE_DELAY_S)  # gather a burst of changes into one write
            await self._save()

    async def _save(self) -> None:
        self._saved_version = self.fake.version
        del self.fake.calls[:-MAX_KEPT_CALLS]
        if self.state_file is None:
            return
        state = json.dumps(self.fake.workspace.saved_state())
        try:
            await asyncio.to_thread(_write_atomically, self.state_file, state)
        except OSError as exc:
            log.warning("event=sandbox_state_not_saved path=%s error=%s", self.state_file, exc)


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file, so a crash mid-write leaves the previous state whole."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
