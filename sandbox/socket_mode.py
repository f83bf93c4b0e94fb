"""Slack's Socket Mode, as the fake serves it: `apps.connections.open` (called with the app-level token) hands
out a one-time WebSocket URL; Slack greets with `hello`, then sends each request as an envelope that the app
must acknowledge with the envelope's id, optionally carrying a response payload.

    url = server.open_url()            # what apps.connections.open answers
    ack = await server.send(request)   # a slash command, click or event, as Slack would wrap it
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from sandbox.workspace import Json

#: How long Slack waits for an envelope's acknowledgement (the same 3 seconds as over HTTP).
ACK_TIMEOUT_S = 3.0


def envelope_type(payload: Json) -> str:
    """Which kind of envelope carries `payload`: a slash command, an interaction or an Events API event."""
    if "command" in payload:
        return "slash_commands"
    if payload.get("type") == "event_callback":
        return "events_api"
    return "interactive"


class SocketModeServer:
    """The WebSocket side of Socket Mode for one app: connections, envelopes and their acknowledgements."""

    def __init__(self, base_url: Callable[[], str]) -> None:
        self._base_url = base_url
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[Json]] = {}
        self._connected = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        """The WebSocket endpoint the URLs from `open_url` point at."""
        return [web.get("/socket-mode/{ticket}", self._socket)]

    def open_url(self) -> str:
        """A fresh one-time WebSocket URL, as `apps.connections.open` returns it."""
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return self._base_url().replace("http://", "ws://", 1) + f"/socket-mode/{ticket}"

    @property
    def connections(self) -> int:
        """How many apps are connected now."""
        return sum(1 for socket in self._sockets if not socket.closed)

    async def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait until an app has connected."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def send(self, payload: Json, *, timeout: float = ACK_TIMEOUT_S) -> Json:
        """Send `payload` in an envelope to a connected app and return its acknowledgement."""
        live = [socket for socket in self._sockets if not socket.closed]
        if not live:
            raise ConnectionError("no app is connected over Socket Mode")
        kind = envelope_type(payload)
        envelope_id = secrets.token_hex(8)
        envelope: Json = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope |= {"retry_attempt": 0, "retry_reason": ""}
        ack: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = ack
        try:
            await live[0].send_str(json.dumps(envelope))
            return await asyncio.wait_for(ack, timeout)
        finally:
            self._acks.pop(envelope_id, None)

    async def close(self) -> None:
        """Disconnect every app."""
        for socket in self._sockets:
            with contextlib.suppress(Exception):
                await socket.close()
        self._sockets.clear()

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid_ticket")
        self._tickets.discard(ticket)  # Slack's URLs are good for one connection
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_str(json.dumps({"type": "hello", "num_connections": self.connections}))
        self._connected.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self._acknowledged(message.data)
        return socket

    def _acknowledged(self, text: str) -> None:
        try:
            ack: Any = json.loads(text)
        except ValueError:
            return
        if isinstance(ack, dict):
            waiting = self._acks.get(str(ack.get("envelope_id")))
            if waiting is not None and not waiting.done():
                waiting.set_result(ack)
