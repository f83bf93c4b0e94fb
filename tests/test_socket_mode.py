"""Socket Mode: with SLACK_APP_TOKEN set, `queuebot run` opens Slack's WebSocket with the app-level token and
takes commands and clicks as envelopes it acknowledges; /slack/events is not served (nothing signs there)."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from bot import app
from bot.engine import Engine
from bot.settings import Settings
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from store.states import JobState
from tests.helpers import wait_for_state

CHANNEL = "C0QUEUE001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_socket_mode_takes_commands_and_clicks_over_the_websocket(engine: Engine) -> None:
    async with FakeSlack() as fake:
        port = _free_port()
        settings = Settings(
            slack_bot_token=fake.token, slack_app_token=fake.app_token, slack_api_url=fake.api_url, port=port
        )
        assert app.missing_slack_settings(settings) == []  # no signing secret needed over Socket Mode
        stop = asyncio.Event()
        running = asyncio.create_task(app.serve(engine, settings, stop=stop))
        try:
            await fake.socket_mode.wait_connected(timeout=10)
            [opened] = fake.calls_to("apps.connections.open", ok=True)
            requests = SignedRequests(fake, "unused: Socket Mode carries the payloads")
            command = requests.slash_command("UOWNER0001", 'add demo.ask question="Ship?"', channel=CHANNEL)
            ack = await fake.socket_mode.send(command.payload)
            assert ack["payload"]["text"].startswith("Created Q-1"), ack

            await fake.wait_for(lambda: bool(fake.calls_to("chat.postMessage", ok=True)), timeout=10)
            ts = str(fake.calls_to("chat.postMessage", ok=True)[0].response["ts"])
            click = requests.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
            await fake.socket_mode.send(click.payload)
            assert (await wait_for_state(engine, 1, JobState.COMPLETED)).result == "approve"

            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{port}/slack/events", data=command.body) as events:
                    assert events.status == 404
                async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                    assert health.status == 200
            assert opened.args == {}  # the app token went in the Authorization header, not the body
        finally:
            stop.set()
            await running


async def test_the_fake_keeps_app_and_bot_tokens_apart() -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as http:

        async def call(method: str, token: str) -> dict[str, object]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{fake.api_url}{method}", headers=headers) as response:
                return dict(json.loads(await response.text()))

        assert (await call("apps.connections.open", fake.token))["error"] == "not_allowed_token_type"
        assert (await call("auth.test", fake.app_token))["error"] == "not_allowed_token_type"
        assert (await call("apps.connections.open", "xapp-wrong"))["error"] == "invalid_auth"
        opened = await call("apps.connections.open", fake.app_token)
        assert str(opened["url"]).startswith("ws://127.0.0.1:")
