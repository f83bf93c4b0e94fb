"""Acknowledge first, parse later: a Slack request whose acknowledgement carries nothing (a button click;
a `/queue` command while a crowd of requests waits, whose reply then goes through its response_url) is
answered 200 as soon as its signature checks out, and Bolt handles it just after.

Bolt's own path decodes the whole payload (a click carries the entire message it was clicked in) and
matches it against every listener before it can acknowledge; on one event loop a burst of clicks then
waits on all of that in turn. Anything else — a modal submission, whose answer may carry field errors, an
event, a bad signature — takes Bolt's path unchanged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.wakeup import CROWDED_ABOVE, Foreground

log = logging.getLogger("queuebot.slack")

#: Set on a request Bolt handles after it was acknowledged: its listener's ack() reaches nobody.
EARLY_ACK_HEADER = "x-queuebot-acknowledged"
#: Slack's interactive payloads open with their type; this much of the encoded body shows it.
TYPE_PREFIX_CHARS = 64
PAYLOAD_KEY = "payload="


def acknowledged_early(headers: dict[str, Sequence[str]]) -> bool:
    """Whether Bolt's request (by its normalized headers) was already acknowledged."""
    return bool(headers.get(EARLY_ACK_HEADER))


def answers_nothing(body: str, crowded: bool) -> bool:
    """Whether a request's acknowledgement may go before Bolt reads it: a click, or a command in a crowd."""
    if body.startswith(PAYLOAD_KEY):
        head = unquote_plus(body[len(PAYLOAD_KEY) : len(PAYLOAD_KEY) + TYPE_PREFIX_CHARS])
        return head.replace(" ", "").startswith('{"type":"block_actions"')
    return crowded and "&command=" in body


class EarlyAck:
    """aiohttp middleware for POST `path`: the early acknowledgement, then Bolt in a task of its own."""

    def __init__(self, app: AsyncApp, signing_secret: str, foreground: Foreground, path: str) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)
        self.foreground = foreground
        self.path = path
        self._tasks: set[asyncio.Task[None]] = set()

    @web.middleware
    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path != self.path:
            return await handler(request)
        body = await request.text()  # aiohttp keeps it, so Bolt's own path can read it again
        # Requests acknowledged here and not yet handled count towards the crowd too.
        crowded = self.foreground.in_flight + len(self._tasks) > CROWDED_ABOVE
        if not answers_nothing(body, crowded) or not self.verifier.is_valid_request(
            body, dict(request.headers)
        ):
            return await handler(request)
        headers: dict[str, str | Sequence[str]] = {key: value for key, value in request.headers.items()}
        headers[EARLY_ACK_HEADER] = "1"
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers)
        task = asyncio.create_task(self._dispatch(bolt_request))
        self._tasks.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=200)

    async def _dispatch(self, request: AsyncBoltRequest) -> None:
        await self.foreground.wait_quiet()  # the acknowledgements of requests still arriving go first
        try:
            response = await self.app.async_dispatch(request)
        except Exception:  # a listener's failure must not pass silently
            log.exception("event=slack_request_failed after=early_ack")
            return
        if response.status >= 400:
            log.warning("event=slack_request_refused status=%d after=early_ack", response.status)
