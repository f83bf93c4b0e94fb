"""The fake Slack answers slack_sdk's real clients as Slack does, and signs requests as Slack signs them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from sandbox.block_kit_rules import message_block_errors, view_errors
from sandbox.fake_slack import FakeSlack
from sandbox.faults import SteadyLimit
from sandbox.signed_requests import SignedRequests, signature

GENERAL = "C0GENERAL1"
OWNER = "UOWNER0001"
GUEST = "UGUEST0001"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.token, base_url=fake.api_url)


def _button(action_id: str, text: str, value: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _modal(**extra: Any) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": "Title"}, "blocks": [], **extra}


# -- Web API --------------------------------------------------------------------------------------
async def test_auth_test_names_the_bot_and_team(fake: FakeSlack, client: AsyncWebClient) -> None:
    answer = await client.auth_test()
    assert answer["ok"] is True
    assert (answer["user_id"], answer["bot_id"], answer["team_id"]) == (
        "UQUEUEBOT1",
        "BQUEUEBOT1",
        "T0SANDBOX1",
    )
    assert [call.method for call in fake.calls] == ["auth.test"]


async def test_chat_update_edits_the_stored_message_in_place(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=GENERAL, text="before", blocks=[_section("before")])
    assert posted["channel"] == GENERAL and posted["message"]["text"] == "before"
    updated = await client.chat_update(
        channel=GENERAL, ts=posted["ts"], text="after", blocks=[_section("after")]
    )
    assert (updated["channel"], updated["ts"], updated["text"]) == (GENERAL, posted["ts"], "after")
    stored = fake.message(GENERAL, posted["ts"])
    assert stored["text"] == "after"
    assert stored["blocks"][0]["text"]["text"] == "after"
    assert "edited" in stored
    assert len(fake.messages(GENERAL)) == 1


async def test_chat_update_without_blocks_keeps_the_previous_blocks(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel=GENERAL, text="t", blocks=[_section("kept")])
    await client.chat_update(channel=GENERAL, ts=posted["ts"], text="new text")
    assert fake.message(GENERAL, posted["ts"])["blocks"][0]["text"]["text"] == "kept"


async def test_chat_update_of_an_unknown_ts_is_message_not_found(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel=GENERAL, ts="1700000000.000001", text="x")
    assert raised.value.response.status_code == 200
    assert raised.value.response["error"] == "message_not_found"


async def test_stored_blocks_get_block_ids_and_action_ids_as_slack_fills_them_in(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "value": "1"}
    blocks = [_section("s"), {"type": "actions", "elements": [button]}]
    posted = await client.chat_postMessage(channel=GENERAL, text="ids", blocks=blocks)
    stored = fake.message(GENERAL, posted["ts"])["blocks"]
    assert posted["message"]["blocks"] == stored
    assert all(block["block_id"] for block in stored)
    assert stored[1]["elements"][0]["action_id"]


async def test_message_ts_values_are_unique_and_increasing(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel=GENERAL, text=str(n)))["ts"] for n in range(5)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


async def test_51_blocks_built_with_slack_sdk_models_are_invalid_blocks(client: AsyncWebClient) -> None:
    blocks = [SectionBlock(text=f"line {n}") for n in range(51)]
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=GENERAL, text="too many", blocks=blocks)
    answer = raised.value.response
    assert answer["error"] == "invalid_blocks"
    assert answer["errors"] == ["must be less than 51 items [json-pointer:/blocks]"]
    assert answer["response_metadata"]["messages"] == [
        "[ERROR] must be less than 51 items [json-pointer:/blocks]"
    ]


async def test_50_blocks_built_with_slack_sdk_models_are_accepted(client: AsyncWebClient) -> None:
    blocks: list[Block] = [SectionBlock(text=f"line {n}") for n in range(49)]
    blocks.append(ActionsBlock(elements=[ButtonElement(text="Go", action_id="go", value="1")]))
    assert (await client.chat_postMessage(channel=GENERAL, text="ok", blocks=blocks))["ok"] is True


async def test_rich_blocks_and_modals_built_with_slack_sdk_models_are_accepted(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    confirm = ConfirmObject(title="Really?", text="This cannot be undone", confirm="Do it", deny="Back")
    options = [Option(text=name, value=name) for name in ("fast", "slow")]
    blocks = [
        HeaderBlock(text="Decision needed"),
        SectionBlock(
            text="*Q-1* wants an answer",
            fields=["*Lane*", "fast"],
            accessory=ButtonElement(text="Evidence", action_id="evidence", value="Q-1"),
        ),
        ContextBlock(elements=[MarkdownTextObject(text="asked by <@UOWNER0001>")]),
        DividerBlock(),
        ActionsBlock(
            block_id="decision",
            elements=[
                ButtonElement(text="Approve", action_id="approve", value="d:1", style="primary"),
                ButtonElement(
                    text="Reject", action_id="reject", value="d:2", style="danger", confirm=confirm
                ),
                StaticSelectElement(placeholder="Lane", action_id="lane", options=options),
            ],
        ),
    ]
    assert (await client.chat_postMessage(channel=GENERAL, text="Decision", blocks=blocks))["ok"] is True
    modal = View(
        type="modal",
        callback_id="reject",
        title="Reject Q-1",
        submit="Reject",
        close="Cancel",
        private_metadata="Q-1",
        blocks=[
            InputBlock(
                block_id="reason",
                label="Reason",
                element=PlainTextInputElement(action_id="text", multiline=True),
            ),
            InputBlock(
                block_id="lane", label="Lane", element=StaticSelectElement(action_id="pick", options=options)
            ),
        ],
    )
    opened = await client.views_open(trigger_id=fake.new_trigger_id(OWNER), view=modal)
    assert opened["view"]["callback_id"] == "reject"


async def test_a_76_char_button_label_sent_raw_is_invalid_blocks(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "actions", "elements": [_button("go", "x" * 76, "1")]}]
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=GENERAL, text="label", blocks=blocks)
    assert raised.value.response["error"] == "invalid_blocks"
    assert raised.value.response["errors"] == [
        "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]"
    ]
    assert fake.messages(GENERAL) == []


async def test_text_over_40000_chars_is_msg_too_long(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=GENERAL, text="x" * 40_001)
    assert raised.value.response["error"] == "msg_too_long"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_a_message_without_text_or_blocks_is_no_text(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=GENERAL)
    assert raised.value.response["error"] == "no_text"


async def test_unknown_channel_is_channel_not_found_but_a_user_id_posts_to_the_dm(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="C0NOSUCH01", text="x")
    assert raised.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="DUNOPENED1", text="x")
    posted = await client.chat_postMessage(channel=OWNER, text="hello")
    assert posted["channel"] == fake.dm_channel(OWNER)
    assert fake.messages(posted["channel"])[0]["text"] == "hello"


async def test_conversations_open_gives_the_same_dm_channel_for_the_same_user(client: AsyncWebClient) -> None:
    first = await client.conversations_open(users=OWNER)
    again = await client.conversations_open(users=[OWNER])
    other = await client.conversations_open(users=GUEST)
    assert first["channel"]["id"] == again["channel"]["id"]
    assert first["channel"]["id"].startswith("D")
    assert other["channel"]["id"] != first["channel"]["id"]
    assert (first["already_open"], again["already_open"]) == (False, True)
    posted = await client.chat_postMessage(channel=first["channel"]["id"], text="dm")
    assert posted["channel"] == first["channel"]["id"]


async def test_post_ephemeral_returns_message_ts_and_keeps_it_out_of_the_channel(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    answer = await client.chat_postEphemeral(channel=GENERAL, user=GUEST, text="only you")
    assert answer["message_ts"]
    assert fake.messages(GENERAL) == []
    assert [e["text"] for e in fake.ephemerals(user=GUEST)] == ["only you"]


async def test_users_info_knows_the_seeded_users(client: AsyncWebClient) -> None:
    answer = await client.users_info(user=OWNER)
    assert answer["user"]["is_owner"] is True
    with pytest.raises(SlackApiError) as raised:
        await client.users_info(user="UNOBODY001")
    assert raised.value.response["error"] == "user_not_found"


async def test_views_publish_and_open_and_update_return_views_with_ids(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    home = await client.views_publish(user_id=OWNER, view={"type": "home", "blocks": [_section("board")]})
    assert home["view"]["id"].startswith("V")
    assert fake.home_view(OWNER) == home["view"]
    modal = await client.views_open(trigger_id=fake.new_trigger_id(OWNER), view=_modal(callback_id="new"))
    updated = await client.views_update(view_id=modal["view"]["id"], view=_modal(callback_id="new2"))
    assert updated["view"]["id"] == modal["view"]["id"]
    assert fake.view(modal["view"]["id"])["callback_id"] == "new2"


async def test_views_open_needs_a_trigger_id_the_fake_issued_within_3_seconds() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock) as fake:
        client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
        with pytest.raises(SlackApiError) as raised:
            await client.views_open(trigger_id="12.34.made-up", view=_modal())
        assert raised.value.response["error"] == "invalid_trigger_id"
        trigger = fake.new_trigger_id(OWNER)
        clock.now += 3.5
        with pytest.raises(SlackApiError) as raised:
            await client.views_open(trigger_id=trigger, view=_modal())
        assert raised.value.response["error"] == "expired_trigger_id"


async def test_a_25_char_modal_title_is_refused_like_slack_with_invalid_arguments(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    view = _modal(title={"type": "plain_text", "text": "t" * 25})
    with pytest.raises(SlackApiError) as raised:
        await client.views_open(trigger_id=fake.new_trigger_id(OWNER), view=view)
    assert raised.value.response["error"] == "invalid_arguments"
    assert raised.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
    ]


async def test_a_home_tab_over_100_blocks_is_refused(client: AsyncWebClient) -> None:
    view = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    with pytest.raises(SlackApiError) as raised:
        await client.views_publish(user_id=OWNER, view=view)
    assert raised.value.response["error"] == "invalid_arguments"


async def test_a_bad_token_is_invalid_auth(fake: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-not-the-token", base_url=fake.api_url)
    with pytest.raises(SlackApiError) as raised:
        await client.auth_test()
    assert raised.value.response["error"] == "invalid_auth"
    assert fake.calls[-1].error == "invalid_auth"


async def test_a_missing_token_is_not_authed_and_an_unknown_method_is_unknown_method(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.api_url + "chat.postMessage", json={"channel": GENERAL}) as response:
            assert (response.status, await response.json()) == (200, {"ok": False, "error": "not_authed"})
        headers = {"Authorization": f"Bearer {fake.token}"}
        async with session.post(fake.api_url + "chat.nope", headers=headers) as response:
            body = await response.json()
    assert (response.status, body["ok"], body["error"]) == (200, False, "unknown_method")


async def test_form_encoded_calls_with_json_string_blocks_are_accepted(fake: FakeSlack) -> None:
    form = {"token": fake.token, "channel": GENERAL, "text": "form", "blocks": json.dumps([_section("form")])}
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.api_url + "chat.postMessage", data=form) as r,
    ):
        body = await r.json()
    assert body["ok"] is True
    assert fake.messages(GENERAL)[0]["blocks"][0]["text"] == _section("form")["text"]
    assert "token" not in fake.calls[-1].args


async def test_wait_for_calls_returns_once_the_calls_arrived(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=GENERAL, text="one")
    calls = await fake.wait_for_calls("chat.postMessage", 1, timeout=1.0)
    assert calls[0].args["text"] == "one"


# -- faults ---------------------------------------------------------------------------------------
async def test_rate_limit_on_demand_answers_429_with_retry_after_then_recovers(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=GENERAL, text="x")
    response = raised.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response["error"] == "ratelimited"
    assert (await client.chat_postMessage(channel=GENERAL, text="x"))["ok"] is True
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]


async def test_rate_limit_retry_handler_retries_through_injected_429s(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.0)  # the handler sleeps Retry-After + random()
    handlers: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=3)]
    client = AsyncWebClient(token=fake.token, base_url=fake.api_url, retry_handlers=handlers)
    fake.rate_limit("chat.postMessage", times=3, retry_after=0)
    posted = await client.chat_postMessage(channel=GENERAL, text="eventually")
    assert posted["ok"] is True
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 429, 429, 200]
    assert [m["text"] for m in fake.messages(GENERAL)] == ["eventually"]


async def test_fail_on_demand_answers_5xx_and_the_server_error_handler_retries(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel=GENERAL, text="v1")
    fake.fail("chat.update", times=2, status=500)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel=GENERAL, ts=posted["ts"], text="v2")
    assert raised.value.response.status_code == 500
    handlers: list[AsyncRetryHandler] = [
        AsyncServerErrorRetryHandler(
            max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.0)
        )
    ]
    retrying = AsyncWebClient(token=fake.token, base_url=fake.api_url, retry_handlers=handlers)
    assert (await retrying.chat_update(channel=GENERAL, ts=posted["ts"], text="v2"))["ok"] is True
    assert [c.status for c in fake.calls_to("chat.update")] == [500, 500, 200]


async def test_steady_limit_is_per_channel_and_refills_with_time() -> None:
    clock = FakeClock()
    async with FakeSlack(
        clock=clock, steady_limits={"chat.postMessage": SteadyLimit(60, per_channel=True)}
    ) as fake:
        client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
        await client.chat_postMessage(channel=GENERAL, text="1")
        await client.chat_postMessage(channel="C0QUEUE001", text="other channel")
        with pytest.raises(SlackApiError) as raised:
            await client.chat_postMessage(channel=GENERAL, text="2")
        assert raised.value.response.status_code == 429
        clock.now += 1.0
        assert (await client.chat_postMessage(channel=GENERAL, text="2"))["ok"] is True


# -- response_url ---------------------------------------------------------------------------------
async def test_response_url_accepts_5_posts_then_refuses_used_url(fake: FakeSlack) -> None:
    url = fake.issue_response_url(GENERAL, OWNER)
    webhook = AsyncWebhookClient(url)
    answers = [await webhook.send(text=f"reply {n}") for n in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [404]
    assert (answers[0].body, answers[5].body) == ("ok", "used_url")
    assert len(fake.response_posts(url)) == 5
    assert len(fake.ephemerals(user=OWNER)) == 5


async def test_response_url_expires_after_30_minutes() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock) as fake:
        url = fake.issue_response_url(GENERAL, OWNER)
        clock.now += 30 * 60 + 1
        answer = await AsyncWebhookClient(url).send(text="late")
    assert (answer.status_code, answer.body) == (404, "expired_url")


async def test_response_url_replace_original_and_delete_original_change_the_message(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel=GENERAL, text="question", blocks=[_section("q")])
    url = fake.issue_response_url(GENERAL, OWNER, posted["ts"])
    webhook = AsyncWebhookClient(url)
    await webhook.send(text="answered", replace_original=True)
    assert fake.message(GENERAL, posted["ts"])["text"] == "answered"
    await webhook.send(delete_original=True)
    assert fake.messages(GENERAL) == []


async def test_response_url_in_channel_posts_a_new_message(fake: FakeSlack) -> None:
    url = fake.issue_response_url(GENERAL, OWNER)
    await AsyncWebhookClient(url).send(text="for everyone", response_type="in_channel")
    assert [m["text"] for m in fake.messages(GENERAL)] == ["for everyone"]


# -- signed requests ------------------------------------------------------------------------------
class BotStub:
    """A minimal app behind Slack: checks signatures as Bolt does and records what it accepted.

    `statuses` are its next answers; a status of 0 holds the answer back until `release` is set.
    """

    def __init__(self, signing_secret: str, statuses: list[int] | None = None) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.statuses = statuses or []
        self.release = asyncio.Event()
        self.received: list[tuple[dict[str, str], str]] = []
        self.app = web.Application()
        self.app.router.add_post("/slack/events", self.handle)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401)
        self.received.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 0:
            await self.release.wait()
            status = 200
        if '"url_verification"' in body:
            return web.json_response({"challenge": json.loads(body)["challenge"]})
        return web.Response(status=status)

    def payload(self, index: int = -1) -> dict[str, Any]:
        """The decoded payload of an accepted request (form `payload=`, form fields, or JSON)."""
        headers, body = self.received[index]
        if headers["Content-Type"] == "application/json":
            decoded: dict[str, Any] = json.loads(body)
            return decoded
        form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
        return json.loads(form["payload"]) if "payload" in form else form


@pytest.fixture
async def bot(fake: FakeSlack) -> AsyncIterator[BotStub]:
    stub = BotStub(fake.signing_secret)
    await stub.runner.setup()
    await web.TCPSite(stub.runner, "127.0.0.1", 0).start()
    stub.url = f"http://127.0.0.1:{stub.runner.addresses[0][1]}/slack/events"
    yield stub
    stub.release.set()
    await stub.runner.cleanup()


@pytest.fixture
async def slack(fake: FakeSlack, bot: BotStub) -> AsyncIterator[SignedRequests]:
    async with SignedRequests(fake, bot.url) as requests:
        yield requests


def test_signatures_match_slack_sdk_signature_verifier_and_a_wrong_secret_does_not(fake: FakeSlack) -> None:
    requests = SignedRequests(fake, "http://unused")
    request = requests.slash_command(OWNER, "help")
    verifier = SignatureVerifier(fake.signing_secret)
    assert request.signature == signature(fake.signing_secret, request.timestamp, request.body)
    assert verifier.is_valid(request.body, str(request.timestamp), request.signature)
    wrong = requests.wrong_secret(request)
    assert not verifier.is_valid(wrong.body, str(wrong.timestamp), wrong.signature)
    stale = requests.stale(request)
    assert not verifier.is_valid(stale.body, str(stale.timestamp), stale.signature)


async def test_a_signed_slash_command_carries_slacks_fields_and_a_working_response_url(
    fake: FakeSlack, bot: BotStub, slack: SignedRequests
) -> None:
    answer = await slack.send(slack.slash_command(OWNER, "add demo x=1", channel=GENERAL))
    assert answer.status == 200
    fields = bot.payload()
    assert (fields["command"], fields["text"], fields["user_id"], fields["channel_id"]) == (
        "/queue", "add demo x=1", OWNER, GENERAL,
    )  # fmt: skip
    assert fields["trigger_id"] and fields["team_id"] == "T0SANDBOX1"
    reply = await AsyncWebhookClient(fields["response_url"]).send(text="queued")
    assert reply.status_code == 200
    assert fake.ephemerals(channel=GENERAL, user=OWNER)[0]["text"] == "queued"


async def test_bad_signatures_and_stale_timestamps_are_refused_by_a_verifying_app(
    bot: BotStub, slack: SignedRequests
) -> None:
    request = slack.slash_command(OWNER, "help")
    assert (await slack.send(slack.wrong_secret(request))).status == 401
    assert (await slack.send(slack.stale(request))).status == 401
    assert bot.received == []


async def test_block_actions_is_built_from_the_posted_message_and_clicked_button(
    fake: FakeSlack, client: AsyncWebClient, bot: BotStub, slack: SignedRequests
) -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "block_id": "q", "text": {"type": "mrkdwn", "text": "Ship it?"}},
        {
            "type": "actions",
            "block_id": "d1",
            "elements": [_button("yes", "Yes", "d1:yes"), _button("no", "No", "d1:no")],
        },
    ]
    posted = await client.chat_postMessage(channel=GENERAL, text="Ship it?", blocks=blocks)
    await slack.send(slack.block_actions(GUEST, "no", channel=GENERAL, message_ts=posted["ts"]))
    payload = bot.payload()
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == GUEST
    assert payload["container"] == {
        "type": "message", "message_ts": posted["ts"], "channel_id": GENERAL, "is_ephemeral": False,
    }  # fmt: skip
    assert payload["message"]["blocks"] == blocks
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "no",
        "d1",
        "d1:no",
        "button",
    )
    reply = await AsyncWebhookClient(payload["response_url"]).send(text="You chose no", replace_original=True)
    assert reply.status_code == 200
    assert fake.message(GENERAL, posted["ts"])["text"] == "You chose no"


async def test_view_submission_carries_the_modal_and_its_state_values(
    fake: FakeSlack, client: AsyncWebClient, bot: BotStub, slack: SignedRequests
) -> None:
    await slack.send(slack.slash_command(OWNER, "new"))
    trigger = bot.payload()["trigger_id"]
    view = _modal(
        callback_id="new_job",
        private_metadata="C0GENERAL1",
        submit={"type": "plain_text", "text": "Create"},
        blocks=[
            {
                "type": "input",
                "block_id": "title",
                "label": {"type": "plain_text", "text": "Title"},
                "element": {"type": "plain_text_input", "action_id": "value"},
            },
            {
                "type": "input",
                "block_id": "lane",
                "label": {"type": "plain_text", "text": "Lane"},
                "element": {
                    "type": "static_select",
                    "action_id": "choice",
                    "options": [
                        {"text": {"type": "plain_text", "text": name}, "value": name}
                        for name in ("fast", "slow")
                    ],
                },
            },
        ],
    )
    opened = await client.views_open(trigger_id=trigger, view=view)
    values = {"title": {"value": "Write docs"}, "lane": {"choice": "slow"}}
    await slack.send(slack.view_submission(OWNER, opened["view"]["id"], values))
    payload = bot.payload()
    assert payload["type"] == "view_submission"
    assert (payload["view"]["callback_id"], payload["view"]["private_metadata"]) == ("new_job", "C0GENERAL1")
    state = payload["view"]["state"]["values"]
    assert state["title"]["value"] == {"type": "plain_text_input", "value": "Write docs"}
    assert state["lane"]["choice"]["selected_option"]["value"] == "slow"


async def test_app_home_opened_and_url_verification_are_signed_json_events(
    bot: BotStub, slack: SignedRequests
) -> None:
    await slack.send(slack.app_home_opened(OWNER))
    event = bot.payload()
    assert event["type"] == "event_callback"
    assert event["event"]["type"] == "app_home_opened" and event["event"]["user"] == OWNER
    assert event["event"]["tab"] == "home" and event["event"]["channel"].startswith("D")
    answer = await slack.send(slack.url_verification("abc123"))
    assert answer.json() == {"challenge": "abc123"}


async def test_deliver_resends_an_event_with_retry_headers_until_the_app_acks(
    bot: BotStub, slack: SignedRequests
) -> None:
    bot.statuses = [500, 200]
    attempts = await slack.deliver(slack.app_home_opened(OWNER))
    assert [a.status for a in attempts if a is not None] == [500, 200]
    (first_headers, first_body), (retry_headers, retry_body) = bot.received
    assert first_body == retry_body
    assert "X-Slack-Retry-Num" not in first_headers
    assert (retry_headers["X-Slack-Retry-Num"], retry_headers["X-Slack-Retry-Reason"]) == ("1", "http_error")


async def test_deliver_resends_an_event_the_app_did_not_ack_in_time_as_http_timeout(
    bot: BotStub, slack: SignedRequests
) -> None:
    bot.statuses = [0, 200]  # the first delivery gets no answer at all
    attempts = await slack.deliver(slack.app_home_opened(OWNER), ack_timeout=0.2)
    assert attempts[0] is None and attempts[1] is not None and attempts[1].status == 200
    assert bot.received[1][0]["X-Slack-Retry-Reason"] == "http_timeout"


# -- Block Kit rules ------------------------------------------------------------------------------
BAD_MESSAGE_BLOCKS: dict[str, list[dict[str, Any]]] = {  # name: blocks breaking exactly one rule
    "section text 3001": [_section("x" * 3001)],
    "11 section fields": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
    "header 151": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "mrkdwn header": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
    "26 actions elements": [{"type": "actions", "elements": [_button(f"b{n}", "b", "v") for n in range(26)]}],
    "11 context elements": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
    "button value 2001": [{"type": "actions", "elements": [_button("b", "b", "v" * 2001)]}],
    "empty button label": [{"type": "actions", "elements": [_button("b", "", "v")]}],
    "action_id 256": [{"type": "actions", "elements": [_button("a" * 256, "b", "v")]}],
    "block_id 256": [{"type": "divider", "block_id": "b" * 256}],
    "duplicate block_id": [{"type": "divider", "block_id": "same"}, {"type": "divider", "block_id": "same"}],
    "101 select options": [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "static_select",
                    "action_id": "s",
                    "options": [
                        {"text": {"type": "plain_text", "text": "o"}, "value": str(n)} for n in range(101)
                    ],
                }
            ],
        }
    ],
    "confirm title 101": [
        {
            "type": "actions",
            "elements": [
                {
                    **_button("b", "b", "v"),
                    "confirm": {
                        "title": {"type": "plain_text", "text": "t" * 101},
                        "text": {"type": "plain_text", "text": "sure?"},
                        "confirm": {"type": "plain_text", "text": "Yes"},
                        "deny": {"type": "plain_text", "text": "No"},
                    },
                }
            ],
        }
    ],
    "confirm text 301": [
        {
            "type": "actions",
            "elements": [
                {
                    **_button("b", "b", "v"),
                    "confirm": {
                        "title": {"type": "plain_text", "text": "t"},
                        "text": {"type": "mrkdwn", "text": "s" * 301},
                        "confirm": {"type": "plain_text", "text": "Yes"},
                        "deny": {"type": "plain_text", "text": "No"},
                    },
                }
            ],
        }
    ],
    "unknown block type": [{"type": "carousel"}],
    "input block in a message": [
        {
            "type": "input",
            "label": {"type": "plain_text", "text": "l"},
            "element": {"type": "plain_text_input", "action_id": "a"},
        }
    ],
    "text input in a section accessory": [
        {**_section("s"), "accessory": {"type": "plain_text_input", "action_id": "a"}}
    ],
}


POINTERS = {
    "section text 3001": "/blocks/0/text/text",
    "11 section fields": "/blocks/0/fields",
    "header 151": "/blocks/0/text/text",
    "mrkdwn header": "/blocks/0/text/type",
    "26 actions elements": "/blocks/0/elements",
    "11 context elements": "/blocks/0/elements",
    "button value 2001": "/blocks/0/elements/0/value",
    "empty button label": "/blocks/0/elements/0/text/text",
    "action_id 256": "/blocks/0/elements/0/action_id",
    "block_id 256": "/blocks/0/block_id",
    "duplicate block_id": "/blocks/1/block_id",
    "101 select options": "/blocks/0/elements/0/options",
    "confirm title 101": "/blocks/0/elements/0/confirm/title/text",
    "confirm text 301": "/blocks/0/elements/0/confirm/text/text",
    "unknown block type": "/blocks/0/type",
    "input block in a message": "/blocks/0/type",
    "text input in a section accessory": "/blocks/0/accessory/type",
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGE_BLOCKS))
def test_message_blocks_breaking_a_slack_limit_are_refused_at_that_spot(name: str) -> None:
    errors = message_block_errors(BAD_MESSAGE_BLOCKS[name])
    assert len(errors) == 1 and errors[0].endswith(f"[json-pointer:{POINTERS[name]}]"), errors


def test_message_blocks_at_every_limit_are_accepted() -> None:
    blocks = [
        _section("x" * 3000),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}] * 10},
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {
            "type": "actions",
            "block_id": "b" * 255,
            "elements": [_button(f"b{n}", "l" * 75, "v" * 2000) for n in range(25)],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10},
        {"type": "divider"},
    ]
    assert message_block_errors(blocks) == []


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (_modal(submit={"type": "plain_text", "text": "s" * 25}), "/view/submit/text"),
        (_modal(close={"type": "plain_text", "text": "c" * 25}), "/view/close/text"),
        (_modal(private_metadata="m" * 3001), "/view/private_metadata"),
        (_modal(callback_id="c" * 256), "/view/callback_id"),
        ({"type": "modal", "blocks": []}, "/view"),
        ({"type": "home", "blocks": [{"type": "divider"}] * 101}, "/view/blocks"),
    ],
)
def test_views_breaking_a_slack_limit_are_refused(view: dict[str, Any], pointer: str) -> None:
    errors = view_errors(view)
    assert errors and errors[0].endswith(f"[json-pointer:{pointer}]"), errors


# -- a real Bolt app against the fake -------------------------------------------------------------
async def test_a_bolt_app_handles_the_fakes_command_click_submission_and_home_requests(
    fake: FakeSlack,
) -> None:
    app = AsyncApp(
        client=AsyncWebClient(token=fake.token, base_url=fake.api_url),
        signing_secret=fake.signing_secret,
    )
    seen: list[str] = []

    @app.command("/queue")
    async def queue(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        blocks = [{"type": "actions", "block_id": "d", "elements": [_button("pick", "Pick", "d:1")]}]
        await client.chat_postMessage(channel=command["channel_id"], text="choose", blocks=blocks)
        await client.views_open(trigger_id=command["trigger_id"], view=_modal(callback_id="form"))
        await respond(text=f"got {command['text']}")

    @app.action("pick")
    async def pick(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        seen.append(f"pick {body['actions'][0]['value']} by {body['user']['id']}")
        await ack()
        await respond(text="picked", replace_original=True)

    @app.view("form")
    async def form(ack: AsyncAck, view: dict[str, Any]) -> None:
        seen.append(f"submitted {view['callback_id']}")
        await ack()

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(
            user_id=event["user"], view={"type": "home", "blocks": [_section("board")]}
        )

    runner = web.AppRunner(app.web_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with SignedRequests(fake, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events") as slack:
            assert (await slack.send(slack.slash_command(OWNER, "add demo"))).status == 200
            (posted,) = await fake.wait_for_calls("chat.postMessage")
            (opened,) = await fake.wait_for_calls("views.open")
            assert (
                await slack.send(
                    slack.block_actions(GUEST, "pick", channel=GENERAL, message_ts=posted.response["ts"])
                )
            ).status == 200
            await fake.wait_for(lambda: fake.message(GENERAL, posted.response["ts"])["text"] == "picked")
            view_id = opened.response["view"]["id"]
            assert (await slack.send(slack.view_submission(OWNER, view_id))).status == 200
            assert (await slack.send(slack.app_home_opened(OWNER))).status == 200
            await fake.wait_for_calls("views.publish")
            await fake.wait_for(lambda: len(fake.ephemerals(user=OWNER)) == 1)
            assert (await slack.send(slack.stale(slack.slash_command(OWNER, "x")))).status == 401
    finally:
        await runner.cleanup()
    assert seen == [f"pick d:1 by {GUEST}", "submitted form"]
    assert [e["text"] for e in fake.ephemerals(user=OWNER)] == ["got add demo"]
    assert fake.home_view(OWNER) is not None
