"""Socket Mode: with SLACK_APP_TOKEN set, `queuebot run` opens Slack's WebSocket with the app-level token and
takes commands and clicks as envelopes it acknowledges; /slack/events is not served (nothing signs there)."""

from __future__ import annotations

import json

import aiohttp

from bot import app
from bot.engine import Engine
from bot.settings import Settings
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from store.states import JobState
from tests.helpers import free_port, running_bot, wait_for_state

CHANNEL = "C0QUEUE001"


async def test_socket_mode_takes_commands_and_clicks_over_the_websocket(engine: Engine) -> None:
    async with FakeSlack() as fake:
        settings = Settings(
            slack_bot_token=fake.token,
            slack_app_token=fake.app_token,
            slack_api_url=fake.api_url,
            port=free_port(),
        )
        assert app.missing_slack_settings(settings) == []  # no signing secret needed over Socket Mode
        async with running_bot(engine, settings) as base_url:
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
                async with http.post(f"{base_url}/slack/events", data=command.body) as events:
                    assert events.status == 404
            assert opened.args == {}  # the app token went in the Authorization header, not the body


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
