"""A fake Slack Web API server (aiohttp) that answers like Slack, records every call and keeps the messages.

async with FakeSlack() as fake:
    client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
    await client.chat_postMessage(channel="C0GENERAL1", text="hi")
    assert fake.calls_to("chat.postMessage")[0].args["text"] == "hi"
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from sandbox.faults import Faults, SteadyLimit
from sandbox.response_urls import ResponseUrl, ResponseUrls
from sandbox.socket_mode import SocketModeServer
from sandbox.web_api import METHODS, Args
from sandbox.workspace import (
    DEFAULT_CHANNELS,
    DEFAULT_USERS,
    Clock,
    Json,
    SlackError,
    Team,
    User,
    Workspace,
)

DEFAULT_TOKEN = "xoxb-sandbox-0000-queuebot"
DEFAULT_SIGNING_SECRET = "sandbox-signing-secret"
DEFAULT_APP_TOKEN = "xapp-1-sandbox-0000-queuebot"


@dataclass(frozen=True)
class Call:
    """One Web API call as the fake received and answered it."""

    method: str
    args: Json
    time: float
    status: int
    response: Json

    @property
    def ok(self) -> bool:
        """Whether Slack accepted the call."""
        return self.status == 200 and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        """Slack's error code, if the call was refused."""
        error = self.response.get("error")
        return error if isinstance(error, str) else None


class FakeSlack:
    """Slack's Web API and response URLs for one workspace, served on 127.0.0.1 (a free port by default)."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        app_token: str = DEFAULT_APP_TOKEN,
        users: Iterable[User] = DEFAULT_USERS,
        channels: Mapping[str, str] = DEFAULT_CHANNELS,
        team: Team | None = None,
        clock: Clock = time.time,
        steady_limits: Mapping[str, SteadyLimit] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.tokens = {token}
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.socket_mode = SocketModeServer(lambda: self.url)
        self.clock = clock
        self.workspace = Workspace.seeded(users=users, channels=channels, team=team, clock=clock)
        self.faults = Faults(clock, dict(steady_limits or {}))
        self.response_urls = ResponseUrls(self.workspace)
        self.calls: list[Call] = []
        self.host, self.port = host, port
        self.app = web.Application()
        self.app.add_routes(self.routes())
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        #: Counts the changes so far: a watcher (the sandbox page) compares it with the last one it saw.
        self.version = 0

    # -- serving -------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        """The fake's routes, for serving it inside another aiohttp app."""
        return [
            web.post("/api/{method}", self._api),
            web.get("/api/{method}", self._api),
            web.post("/response/{url_id}", self._response),
            *self.socket_mode.routes(),
        ]

    async def start(self) -> FakeSlack:
        """Start serving; `port=0` picks a free port, read back from `url`."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def close(self) -> None:
        """Stop serving."""
        await self.socket_mode.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The server's root, e.g. "http://127.0.0.1:41234"."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL, the value for slack_sdk's `base_url` (ends with "/")."""
        return f"{self.url}/api/"

    # -- faults --------------------------------------------------------------------------------
    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` ("*" for any) answer 429, `Retry-After`, `ratelimited`."""
        self.faults.rate_limit(method, times=times, retry_after=retry_after)

    def fail(self, method: str, *, times: int = 1, status: int = 500, error: str = "fatal_error") -> None:
        """The next `times` calls of `method` ("*" for any) answer HTTP `status`."""
        self.faults.fail(method, times=times, status=status, error=error)

    def lose_response(self, method: str, *, times: int = 1, status: int = 503) -> None:
        """The next `times` calls of `method` take effect, but answer HTTP `status` (the answer is lost)."""
        self.faults.lose_response(method, times=times, status=status)

    def limit(self, method: str, limit: SteadyLimit | None) -> None:
        """A steady per-method rate limit (None removes it); see `sandbox.faults.SLACK_LIMITS`."""
        self.faults.limit(method, limit)

    # -- inspection ----------------------------------------------------------------------------
    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        """The calls of one method, in order; `ok=True` keeps only the accepted ones."""
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    async def wait_for(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until `condition()` holds; it is checked after every Web API call and response_url post."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(condition), timeout)

    async def wait_for_calls(
        self, method: str, count: int = 1, *, ok: bool | None = True, timeout: float = 5.0
    ) -> list[Call]:
        """Wait until at least `count` calls of `method` were recorded (accepted ones by default)."""
        await self.wait_for(lambda: len(self.calls_to(method, ok=ok)) >= count, timeout=timeout)
        return self.calls_to(method, ok=ok)

    def messages(self, channel: str) -> list[Json]:
        """A channel's messages as they are now (edits applied, deletions gone), oldest first."""
        return copy.deepcopy(self.workspace.messages.get(self.workspace.resolve_channel(channel), []))

    def message(self, channel: str, ts: str) -> Json:
        """One message as it is now."""
        return copy.deepcopy(self.workspace.find_message(self.workspace.resolve_channel(channel), ts))

    def ephemerals(self, *, channel: str | None = None, user: str | None = None) -> list[Json]:
        """Ephemeral messages (each with "channel" and "user"), optionally for one channel or user."""
        return [
            {**copy.deepcopy(e.message), "channel": e.channel, "user": e.user}
            for e in self.workspace.ephemerals
            if (channel is None or e.channel == channel) and (user is None or e.user == user)
        ]

    def home_view(self, user: str) -> Json | None:
        """The Home tab published for a user, if any."""
        view_id = self.workspace.home.get(user)
        return self.view(view_id) if view_id else None

    def view(self, view_id: str) -> Json:
        """A view (modal or Home tab) by id."""
        return self.workspace.view_json(self.workspace.views[view_id])

    def dm_channel(self, user: str) -> str:
        """The bot's DM channel with a user, as conversations.open would return it."""
        return self.workspace.open_dm([user])

    # -- interactions --------------------------------------------------------------------------
    def issue_response_url(self, channel: str, user: str, message_ts: str | None = None) -> str:
        """A response URL for an interaction by `user` in `channel` (on the message `message_ts`)."""
        return self.response_url(self.response_urls.issue(channel, user, message_ts))

    def response_url(self, url: ResponseUrl) -> str:
        """The full address of a response URL."""
        return f"{self.url}/response/{url.id}"

    def response_posts(self, url: str) -> list[Json]:
        """The bodies accepted at a response URL, in order."""
        found = self.response_urls.by_id[url.rstrip("/").rsplit("/", 1)[-1]]
        return [copy.deepcopy(post.body) for post in found.accepted]

    def new_trigger_id(self, user: str) -> str:
        """A trigger id as an interaction by `user` carries it."""
        return self.workspace.new_trigger_id(user)

    # -- handlers ------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: Json = {}
        try:
            if method not in METHODS and method != "apps.connections.open":
                raise SlackError("unknown_method", extra={"req_method": method})
            args, token = await _read_args(request)
            self._authenticate(method, token)
            channel = args.get("channel")
            self.faults.check(method, channel if isinstance(channel, str) else None)
            body: Json = {"ok": True, **self._answer(method, args)}
            status, headers = 200, {}
            self.faults.check_answer(method)
        except SlackError as error:
            body = {"ok": False, "error": error.code, **error.extra}
            status, headers = error.status, error.headers
        await self._record(Call(method, args, self.clock(), status, body))
        return web.json_response(body, status=status, headers=headers)

    def _authenticate(self, method: str, token: str | None) -> None:
        if not token:
            raise SlackError("not_authed")
        if token not in self.tokens and token != self.app_token:
            raise SlackError("invalid_auth")
        # Slack keeps the two kinds apart: the app-level token only opens Socket Mode connections.
        if (token == self.app_token) != (method == "apps.connections.open"):
            raise SlackError("not_allowed_token_type")

    def _answer(self, method: str, args: Json) -> Json:
        if method == "apps.connections.open":
            return {"url": self.socket_mode.open_url()}
        return METHODS[method](self.workspace, Args(args))

    async def changed(self) -> None:
        """Count a change and wake `wait_for`; called after every Web API call and response_url post, and
        by whoever changes the workspace in another way (the sandbox page)."""
        self.version += 1
        async with self._changed:
            self._changed.notify_all()

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        await self.changed()

    async def _response(self, request: web.Request) -> web.Response:
        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        try:
            self.response_urls.post(request.match_info["url_id"], body)
        except SlackError as error:
            return web.Response(status=error.status, text=error.code)
        finally:
            await self.changed()
        return web.Response(text="ok")


async def _read_args(request: web.Request) -> tuple[Json, str | None]:
    """Arguments from the query string and the body (form or JSON), and the bearer or form token."""
    args: Json = dict(request.query)
    args.pop("token", None)  # Slack ignores tokens in query strings
    token: str | None = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header.removeprefix("Bearer ").strip()
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise SlackError("invalid_json") from exc
        if not isinstance(body, dict):
            raise SlackError("invalid_json")
        args.update(body)
    elif request.can_read_body:
        form = await request.post()
        args.update({key: value for key, value in form.items() if isinstance(value, str)})
        form_token = args.pop("token", None)
        token = token or form_token
    return args, token
