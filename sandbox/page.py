"""The sandbox workspace's web page: the static files, what one person sees as JSON, the endpoints behind
its message box, buttons and modals, and a Server-Sent Events stream that says when anything changed.

    GET  /                         the page (static files under /static/)
    GET  /sandbox/api/state        ?user=U…&conversation=C… → people, conversations, messages, Home, modal
    GET  /sandbox/api/events       text/event-stream: `data: {"version": N}` after every change
    POST /sandbox/api/message      {user, channel, text}: `/queue …` as a signed slash command
    POST /sandbox/api/click        {user, action_id, value?, channel?, message_ts?, view_id?}
    POST /sandbox/api/submit       {user, view_id, values: {block_id: {action_id: value}}}
    POST /sandbox/api/close        {user, view_id}
    POST /sandbox/api/app          {user, tab}: app_home_opened
    POST /sandbox/api/dismiss      {user, channel, ts}: hide an ephemeral message
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from sandbox.fake_slack import FakeSlack
from sandbox.interactions import SLACKBOT, Interactions, Outcome
from sandbox.workspace import Json, SlackError, User, Workspace

STATIC_DIR = Path(__file__).parent / "static"
#: How often an idle event stream sends a comment, so proxies and browsers keep it open.
KEEPALIVE_S = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _title(user: User, roles: Mapping[str, str]) -> str:
    if user.id in roles:
        return roles[user.id]
    return "workspace owner" if user.is_owner else "workspace admin" if user.is_admin else "member"


def _sender(ws: Workspace, user_id: str) -> Json:
    if user_id == ws.team.bot_user_id:
        return {"id": user_id, "name": ws.team.bot_name, "is_app": True}
    if user_id == SLACKBOT:
        return {"id": user_id, "name": "Slackbot", "is_app": True}
    found = ws.users.get(user_id)
    return {"id": user_id, "name": (found.real_name or found.name) if found else user_id, "is_app": False}


def conversations(ws: Workspace, user: str) -> list[Json]:
    """The channels, the app's DM (its Messages tab) and any other DM of `user`, for the sidebar."""
    app_dm = ws.open_dm([user])  # the same id every time; opening it only makes it known
    listed = [(channel, name, "channel") for channel, name in sorted(ws.channels.items(), key=lambda c: c[1])]
    listed.append((app_dm, ws.team.bot_name, "app"))
    listed += [
        (channel, ", ".join(_sender(ws, m)["name"] for m in members.split(",") if m != user), "dm")
        for channel, members in ws.dms.items()
        if channel != app_dm and user in members.split(",")
    ]
    return [
        {
            "id": channel,
            "name": name,
            "kind": kind,
            "message_count": len(ws.messages.get(channel, [])),
            "latest_ts": ws.messages[channel][-1]["ts"] if ws.messages.get(channel) else None,
        }
        for channel, name, kind in listed
    ]


def messages(ws: Workspace, channel: str, user: str, typed: Mapping[str, str]) -> list[Json]:
    """A conversation as `user` sees it: its messages and their own ephemeral ones, oldest first."""
    shown = [{**copy.deepcopy(m), "ephemeral": False} for m in ws.messages.get(channel, [])]
    shown += [
        {**copy.deepcopy(e.message), "ephemeral": True, "typed": typed.get(e.message["ts"])}
        for e in ws.ephemerals
        if e.channel == channel and e.user == user
    ]
    for message in shown:
        message["sender"] = _sender(ws, str(message.get("user", "")))
    return sorted(shown, key=lambda m: float(m["ts"]))


class Page:
    """The page and its JSON endpoints, over one fake workspace and the people's interactions with it."""

    def __init__(
        self,
        fake: FakeSlack,
        interactions: Interactions,
        *,
        roles: Mapping[str, str] | None = None,
        start_conversation: str | None = None,
    ) -> None:
        self.fake = fake
        self.ws = fake.workspace
        self.interactions = interactions
        #: a short line per user id, shown under the user switcher (e.g. "queuebot admin")
        self.roles = dict(roles or {})
        #: the conversation shown first (default: the first channel)
        self.start_conversation = start_conversation
        self._closing = asyncio.Event()

    def routes(self) -> list[web.AbstractRouteDef]:
        """The page's routes, to serve beside the fake's Web API."""
        return [
            web.get("/", self._index),
            web.static("/static", STATIC_DIR),
            web.get("/sandbox/api/state", self._state),
            web.get("/sandbox/api/events", self._events),
            web.post("/sandbox/api/message", self._json(self._message)),
            web.post("/sandbox/api/click", self._json(self._click)),
            web.post("/sandbox/api/submit", self._json(self._submit)),
            web.post("/sandbox/api/close", self._json(self._close)),
            web.post("/sandbox/api/app", self._json(self._app)),
            web.post("/sandbox/api/dismiss", self._json(self._dismiss)),
        ]

    async def close(self) -> None:
        """End the open event streams, so the server can stop without waiting for them."""
        self._closing.set()
        await self.fake.changed()

    # -- what one person sees --------------------------------------------------------------------
    def state(self, user: str, conversation: str | None = None) -> Json:
        """Everything the page shows `user`, with the messages of one conversation ("app" is the user's DM
        with the app; by default the start conversation)."""
        ws = self.ws
        me = ws.user(user)
        listed = conversations(ws, me.id)
        if conversation == "app":
            conversation = ws.open_dm([me.id])
        current = conversation or self.start_conversation or listed[0]["id"]
        if current not in {c["id"] for c in listed}:
            raise SlackError("channel_not_found")
        people = [
            {
                "id": person.id,
                "name": person.name,
                "real_name": person.real_name or person.name,
                "title": _title(person, self.roles),
                "conversations": [
                    {"id": c["id"], "message_count": c["message_count"]} for c in conversations(ws, person.id)
                ],
            }
            for person in ws.users.values()
        ]
        modals = self.interactions.open_modals(me.id)
        modal = None
        if modals:
            top = modals[-1]
            modal = {**ws.view_json(top), "errors": self.interactions.view_errors.get(top.id, {})}
        home = self.fake.home_view(me.id)
        return {
            "version": self.fake.version,
            "team": {"name": ws.team.name, "bot_user_id": ws.team.bot_user_id, "bot_name": ws.team.bot_name},
            "user": me.id,
            "people": people,
            "conversations": listed,
            "conversation": {
                "id": current,
                "messages": messages(ws, current, me.id, self.interactions.typed),
            },
            "home": home,
            "modal": modal,
        }

    # -- handlers --------------------------------------------------------------------------------
    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _state(self, request: web.Request) -> web.StreamResponse:
        try:
            body = self.state(request.query.get("user", ""), request.query.get("conversation") or None)
        except SlackError as error:
            return web.json_response({"ok": False, "error": error.code}, status=400)
        return web.json_response(body)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        seen = -1

        def news() -> bool:
            return self.fake.version != seen or self._closing.is_set()

        with contextlib.suppress(ConnectionResetError):
            while not self._closing.is_set():
                if self.fake.version != seen:
                    seen = self.fake.version
                    await response.write(f"data: {json.dumps({'version': seen})}\n\n".encode())
                    continue
                try:
                    await self.fake.wait_for(news, timeout=KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        return response

    def _json(self, action: Callable[[Json], Awaitable[Outcome | None]]) -> Handler:
        """A POST endpoint taking a JSON object; Slack-level refusals are 400 with Slack's error code."""

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"ok": False, "error": "invalid_json"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"ok": False, "error": "invalid_json"}, status=400)
            try:
                outcome = await action(body)
            except SlackError as error:
                return web.json_response({"ok": False, "error": error.code}, status=400)
            except (KeyError, TypeError, ValueError) as error:  # a missing or malformed field
                return web.json_response({"ok": False, "error": f"invalid_arguments: {error}"}, status=400)
            except LookupError as error:
                return web.json_response({"ok": False, "error": f"not_found: {error}"}, status=404)
            return web.json_response((outcome or Outcome(ok=True)).to_json())

        return handle

    async def _message(self, body: Json) -> Outcome:
        return await self.interactions.message(str(body["user"]), str(body["channel"]), str(body["text"]))

    async def _click(self, body: Json) -> Outcome:
        return await self.interactions.click(
            str(body["user"]),
            str(body["action_id"]),
            value=_optional(body, "value"),
            channel=_optional(body, "channel"),
            message_ts=_optional(body, "message_ts"),
            view_id=_optional(body, "view_id"),
        )

    async def _submit(self, body: Json) -> Outcome:
        values = body.get("values") or {}
        if not isinstance(values, dict):
            raise TypeError("values must be an object")
        return await self.interactions.submit(str(body["user"]), str(body["view_id"]), values)

    async def _close(self, body: Json) -> None:
        await self.interactions.close_view(str(body["user"]), str(body["view_id"]))

    async def _app(self, body: Json) -> None:
        self.interactions.open_app(str(body["user"]), str(body.get("tab") or "home"))

    async def _dismiss(self, body: Json) -> None:
        await self.interactions.dismiss(str(body["user"]), str(body["channel"]), str(body["ts"]))


def _optional(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return None if value is None else str(value)
