"""Requests from Slack to the app, signed with the signing secret exactly as Slack signs them, and sent.

async with SignedRequests(fake, "http://127.0.0.1:3000/slack/events") as slack:
    reply = await slack.send(slack.slash_command("UOWNER0001", "add demo x=1"))
    refused = await slack.send(slack.stale(slack.slash_command("UOWNER0001", "help")))  # 401 from Bolt
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import aiohttp

from sandbox import payloads
from sandbox.fake_slack import FakeSlack
from sandbox.workspace import Clock, Json

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's `X-Slack-Signature`: "v0=" + hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SlackRequest:
    """One signed request, ready to send; `payload` is what it carries, decoded."""

    body: bytes
    content_type: str
    timestamp: int
    signature: str
    payload: Json
    retry_num: int | None = None
    retry_reason: str | None = None

    @classmethod
    def signed(
        cls, secret: str, timestamp: int, payload: Json, *, form: Mapping[str, str] | None = None
    ) -> SlackRequest:
        """Encode `form` (form-encoded) or else `payload` (JSON) and sign it."""
        if form is not None:
            body, content_type = urlencode(form).encode(), FORM
        else:
            body, content_type = json.dumps(payload).encode(), JSON
        return cls(body, content_type, timestamp, signature(secret, timestamp, body), payload)

    @property
    def headers(self) -> dict[str, str]:
        """The headers Slack sends with it."""
        headers = {
            "Content-Type": self.content_type,
            "X-Slack-Request-Timestamp": str(self.timestamp),
            "X-Slack-Signature": self.signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if self.retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(self.retry_num)
            headers["X-Slack-Retry-Reason"] = self.retry_reason or "http_timeout"
        return headers

    def resigned(self, secret: str, *, timestamp: int | None = None) -> SlackRequest:
        """The same body signed again with `secret` (a wrong one, in tests) and/or another timestamp."""
        stamp = self.timestamp if timestamp is None else timestamp
        return dataclasses.replace(self, timestamp=stamp, signature=signature(secret, stamp, self.body))

    def retried(self, num: int, reason: str = "http_timeout", *, secret: str, timestamp: int) -> SlackRequest:
        """Slack's resend of this request: same body, new timestamp, `X-Slack-Retry-Num`/`-Reason`."""
        again = self.resigned(secret=secret, timestamp=timestamp)
        return dataclasses.replace(again, retry_num=num, retry_reason=reason)

    @property
    def response_url(self) -> str | None:
        """The response URL handed to the app, if any."""
        value = self.payload.get("response_url")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Delivery:
    """The app's answer to one request."""

    status: int
    text: str
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The answer's body as JSON (an ack may carry a payload, e.g. response_action)."""
        return json.loads(self.text) if self.text else None


class SignedRequests:
    """Builds Slack's requests from the fake's state and sends them to the app at `bot_url`."""

    def __init__(
        self, fake: FakeSlack, bot_url: str, *, signing_secret: str | None = None, clock: Clock = time.time
    ) -> None:
        self.fake = fake
        self.ws = fake.workspace
        self.bot_url = bot_url
        self.secret = signing_secret or fake.signing_secret
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SignedRequests:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sign(self, payload: Json, form: Mapping[str, str] | None = None) -> SlackRequest:
        return SlackRequest.signed(self.secret, int(self.clock()), payload, form=form)

    # -- builders ------------------------------------------------------------------------------
    def slash_command(
        self, user: str, text: str, *, channel: str = "C0GENERAL1", command: str = "/queue"
    ) -> SlackRequest:
        """`/command text` typed by `user` in `channel`, with a fresh response_url and trigger_id."""
        who = self.ws.user(user)
        channel = self.ws.resolve_channel(channel)
        response_url = self.fake.issue_response_url(channel, who.id)
        form = payloads.slash_command(
            self.ws, who, channel, command, text, response_url, self.ws.new_trigger_id(who.id)
        )
        return self._sign(dict(form), form)

    def block_actions(
        self,
        user: str,
        action_id: str,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        view_id: str | None = None,
        value: str | None = None,
    ) -> SlackRequest:
        """A click on `action_id` in a posted message (`channel`, `message_ts`) or a view (`view_id`).

        `value` picks among buttons sharing an action_id, or the option chosen in a select/overflow menu.
        """
        who = self.ws.user(user)
        trigger_id = self.ws.new_trigger_id(who.id)
        if view_id is not None:
            view = self.fake.view(view_id)
            block_id, element = payloads.find_element(view["blocks"], action_id, value)
            action = payloads.action_json(self.ws, block_id, element, value)
            payload = payloads.block_actions(
                self.ws, who, action, trigger_id=trigger_id, response_url=None, view=view
            )
        else:
            if channel is None or message_ts is None:
                raise ValueError("a click needs channel and message_ts, or view_id")
            channel = self.ws.resolve_channel(channel)
            ephemeral = self.ws.find_ephemeral(channel, message_ts)
            message = ephemeral.message if ephemeral else self.ws.find_message(channel, message_ts)
            block_id, element = payloads.find_element(message.get("blocks", []), action_id, value)
            action = payloads.action_json(self.ws, block_id, element, value)
            response_url = self.fake.issue_response_url(channel, who.id, message_ts)
            payload = payloads.block_actions(
                self.ws,
                who,
                action,
                trigger_id=trigger_id,
                response_url=response_url,
                channel=channel,
                message=json.loads(json.dumps(message)),
                is_ephemeral=ephemeral is not None,
            )
        return self._sign(payload, {"payload": json.dumps(payload)})

    def view_submission(
        self, user: str, view_id: str, values: Mapping[str, Mapping[str, Any]] | None = None
    ) -> SlackRequest:
        """Submitting the modal `view_id` with `values[block_id][action_id]` (plain values or state dicts)."""
        who = self.ws.user(user)
        view = self.ws.views[view_id]
        payload = payloads.view_submission(self.ws, who, view, values or {}, self.ws.new_trigger_id(who.id))
        return self._sign(payload, {"payload": json.dumps(payload)})

    def app_home_opened(self, user: str, *, tab: str = "home") -> SlackRequest:
        """`user` opening the app's Home (or Messages) tab."""
        return self._sign(payloads.app_home_opened(self.ws, self.ws.user(user), tab))

    def url_verification(self, challenge: str = "sandbox-challenge") -> SlackRequest:
        """The request URL handshake."""
        return self._sign(payloads.url_verification(challenge))

    def stale(self, request: SlackRequest, age: int = 600) -> SlackRequest:
        """`request` correctly signed, but `age` seconds old (Slack's limit is 5 minutes)."""
        return request.resigned(self.secret, timestamp=int(self.clock()) - age)

    def wrong_secret(self, request: SlackRequest) -> SlackRequest:
        """`request` signed with a secret that is not the app's."""
        return request.resigned("not-" + self.secret)

    def retried(self, request: SlackRequest, num: int, reason: str = "http_timeout") -> SlackRequest:
        """Slack's retry number `num` of `request`, signed now."""
        return request.retried(num, reason, secret=self.secret, timestamp=int(self.clock()))

    # -- sending -------------------------------------------------------------------------------
    async def send(self, request: SlackRequest, *, timeout: float = 10.0) -> Delivery:
        """POST the request to the app and return its answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self._session.post(
            self.bot_url, data=request.body, headers=request.headers, timeout=client_timeout
        ) as response:
            return Delivery(response.status, await response.text(), dict(response.headers))

    async def deliver(
        self,
        request: SlackRequest,
        *,
        ack_timeout: float = 3.0,
        retry_delays: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> list[Delivery | None]:
        """Send as Slack sends events: resend (up to 3 times) while the app gives no 2xx within `ack_timeout`.

        Returns one entry per attempt: the app's answer, or None for a timeout or a refused connection.
        """
        attempts: list[Delivery | None] = []
        current = request
        for number in range(len(retry_delays) + 1):
            reason = await self._attempt(current, ack_timeout, attempts)
            if reason is None or number == len(retry_delays):
                break
            await asyncio.sleep(retry_delays[number])
            current = self.retried(request, number + 1, reason)
        return attempts

    async def _attempt(
        self, request: SlackRequest, ack_timeout: float, attempts: list[Delivery | None]
    ) -> str | None:
        """One attempt; returns Slack's retry reason, or None when the app acknowledged."""
        try:
            answer = await self.send(request, timeout=ack_timeout)
        except TimeoutError:
            attempts.append(None)
            return "http_timeout"
        except aiohttp.ClientConnectionError:
            attempts.append(None)
            return "connection_failed"
        attempts.append(answer)
        return None if 200 <= answer.status < 300 else "http_error"
