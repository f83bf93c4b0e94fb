"""The sandbox workspace over real HTTP: its page and JSON endpoints drive the real bot (Bolt, engine,
workers, outbox) as a person would, with Slack's signing, acknowledgement timeouts, event retries and rate
limits; and `queuebot run` with no Slack credentials serves it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.context import JobContext
from bot.jobtypes import Registry, job_type
from sandbox.faults import SLACK_LIMITS
from sandbox.server import SandboxServer
from store.states import JobState
from tests.helpers import free_port, wait_for, wait_for_state
from tests.sandbox_helpers import (
    GUEST,
    OWNER,
    QUEUE,
    REVIEWER,
    Sandbox,
    running_sandbox,
    sqlite_engine,
)

QUEUEBOT = Path(sys.executable).parent / "queuebot"
#: Far above the few seconds `queuebot run` needs to start or stop; reaching it means a hang.
PROCESS_TIMEOUT_S = 30.0


@pytest.fixture
async def sandbox(sqlite_template: Path, tmp_path: Path, types: Registry) -> AsyncIterator[Sandbox]:
    engine, url = sqlite_engine(sqlite_template, tmp_path, types)
    try:
        async with running_sandbox(engine, url) as running:
            yield running
    finally:
        await engine.store.close()


def _button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    [button] = [
        element
        for block in message.get("blocks", [])
        if block["type"] == "actions"
        for element in block["elements"]
        if element.get("action_id") == action_id
    ]
    return button


def _created(reply: dict[str, Any]) -> int:
    match = re.match(r"Created Q-(\d+)", reply["text"])
    assert match, reply["text"]
    return int(match.group(1))


async def _click(sandbox: Sandbox, user: str, message: dict[str, Any], action_id: str) -> dict[str, Any]:
    button = _button(message, action_id)
    return await sandbox.post(
        "click",
        {
            "user": user,
            "action_id": action_id,
            "value": button["value"],
            "channel": QUEUE,
            "message_ts": message["ts"],
        },
    )


async def test_the_page_and_its_static_files_load() -> None:
    server = await SandboxServer(bot_url="http://127.0.0.1:9/slack/events").start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url) as page:
                html = await page.text()
                assert page.status == 200 and page.content_type == "text/html"
            assert '<script src="/static/app.js"' in html and 'id="message-box"' in html
            for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
                async with http.get(f"{server.url}/static/{name}") as static:
                    assert static.status == 200 and kind in static.content_type
                    assert len(await static.text()) > 1000
            async with http.get(f"{server.url}/static/nothing.js") as missing:
                assert missing.status == 404
    finally:
        await server.close()


async def test_a_command_typed_on_the_page_posts_a_decision_that_a_click_answers_in_place(
    sandbox: Sandbox,
) -> None:
    typed = '/queue add demo.ask question="Ship it?"'
    assert (await sandbox.post("message", {"user": REVIEWER, "channel": QUEUE, "text": typed}))["ok"] is True
    [reply] = [m for m in await sandbox.messages(REVIEWER) if m["ephemeral"]]
    assert reply["typed"] == typed and "(`demo.ask`, P1, lane fast)" in reply["text"]
    assert not [m for m in await sandbox.messages(OWNER) if m["ephemeral"]]  # only the one who typed sees it
    job_id = _created(reply)

    decision = await sandbox.wait_for_message(
        REVIEWER, lambda m: "Decision needed: Ship it?" in str(m.get("blocks"))
    )
    assert decision["sender"] == {"id": "UQUEUEBOT1", "name": "queuebot", "is_app": True}
    assert (await _click(sandbox, REVIEWER, decision, "answer:approve"))["ok"] is True

    job = await wait_for_state(sandbox.engine, job_id, JobState.COMPLETED)
    assert job.result == "approve"
    updated = await sandbox.wait_for_message(REVIEWER, lambda m: m["ts"] == decision["ts"] and "edited" in m)
    assert "<@UREVIEW001> answered *approve*" in str(updated["blocks"])
    assert "answer:approve" not in str(updated["blocks"])  # the buttons are gone

    await sandbox.post("dismiss", {"user": REVIEWER, "channel": QUEUE, "ts": reply["ts"]})
    assert not [m for m in await sandbox.messages(REVIEWER) if m["ephemeral"]]


async def test_the_acting_user_is_who_clicks_so_a_guest_is_refused_an_owner_only_decision(
    sandbox: Sandbox, types: Registry
) -> None:
    class Empty(BaseModel):
        pass

    @job_type("test.owner_only", input=Empty, lane="fast", into=types)
    async def owner_only(ctx: JobContext, data: Empty) -> str:  # the default policy: owner and admins
        return (await ctx.ask("go", "Go ahead?", ["yes", "no"])).value

    await sandbox.post("message", {"user": OWNER, "channel": QUEUE, "text": "/queue add test.owner_only"})
    [created] = [m for m in await sandbox.messages(OWNER) if m["ephemeral"]]
    job_id = _created(created)
    decision = await sandbox.wait_for_message(
        GUEST, lambda m: "Decision needed: Go ahead?" in str(m.get("blocks"))
    )

    assert (await _click(sandbox, GUEST, decision, "answer:yes"))["ok"] is True  # acknowledged, then refused
    refusal = await sandbox.wait_for_message(
        GUEST, lambda m: m["ephemeral"] and "may not answer" in m["text"]
    )
    assert refusal["text"].startswith("UGUEST0001 may not answer D-")
    assert not [m for m in await sandbox.messages(OWNER) if "may not answer" in m["text"]]
    assert (await sandbox.engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION

    assert (await _click(sandbox, OWNER, decision, "answer:yes"))["ok"] is True
    assert (await wait_for_state(sandbox.engine, job_id, JobState.COMPLETED)).result == "yes"


async def test_a_guest_may_not_cancel_the_owners_work_but_an_admin_may(sandbox: Sandbox) -> None:
    await sandbox.post("message", {"user": GUEST, "channel": QUEUE, "text": "/queue cancel Q-1"})
    [refused] = [m for m in await sandbox.messages(GUEST) if m["ephemeral"]]
    assert refused["text"] == "UGUEST0001 may not cancel Q-1; only its owner or an admin may"
    await sandbox.post("message", {"user": "UADMIN0001", "channel": QUEUE, "text": "/queue cancel Q-1"})
    [done] = [m for m in await sandbox.messages("UADMIN0001") if m["ephemeral"]]
    assert done["text"] == "Q-1 cancelled."


async def test_a_modal_the_bot_opens_shows_its_field_errors_and_closes_when_submitted_well(
    sandbox: Sandbox,
) -> None:
    assert (await sandbox.post("message", {"user": OWNER, "channel": QUEUE, "text": "/queue new demo.echo"}))[
        "ok"
    ]
    modals: list[dict[str, Any]] = []

    async def opened() -> bool:
        modals[:] = [m for m in [(await sandbox.state(OWNER))["modal"]] if m]
        return bool(modals)

    await wait_for(opened)
    modal = modals[0]
    assert modal["title"]["text"] == "New demo.echo"
    assert not (await sandbox.state(REVIEWER))["modal"]  # a modal is its opener's only

    refused = await sandbox.post("submit", {"user": OWNER, "view_id": modal["id"], "values": {}})
    assert refused == {**refused, "ok": True, "closed": False, "errors": {"field:text": "Field required"}}
    assert (await sandbox.state(OWNER))["modal"]["errors"] == {"field:text": "Field required"}

    values = {"field:text": {"value": "hello"}}
    submitted = await sandbox.post("submit", {"user": OWNER, "view_id": modal["id"], "values": values})
    assert submitted["ok"] is True and submitted["closed"] is True
    assert (await sandbox.state(OWNER))["modal"] is None
    note = await sandbox.wait_for_message(OWNER, lambda m: m["ephemeral"] and "(`demo.echo`)" in m["text"])
    await wait_for_state(sandbox.engine, _created(note), JobState.COMPLETED)


async def test_opening_the_app_home_shows_the_board_the_bot_publishes(sandbox: Sandbox) -> None:
    assert (await sandbox.state(OWNER))["home"] is None
    assert (await sandbox.post("app", {"user": OWNER, "tab": "home"}))["ok"] is True
    homes: list[dict[str, Any]] = []

    async def published() -> bool:
        homes[:] = [h for h in [(await sandbox.state(OWNER, "app"))["home"]] if h]
        return bool(homes)

    await wait_for(published)
    assert homes[0]["type"] == "home" and "Waiting on you" in str(homes[0]["blocks"])
    assert (await sandbox.state(REVIEWER))["home"] is None  # published for the person who opened it


async def test_the_event_stream_tells_the_page_of_each_change(sandbox: Sandbox) -> None:
    async def next_version(lines: aiohttp.StreamReader) -> int:
        while True:
            line = (await asyncio.wait_for(lines.readline(), timeout=10)).decode()
            if line.startswith("data: "):
                return int(json.loads(line.removeprefix("data: "))["version"])

    async with sandbox.http.get(f"{sandbox.url}/sandbox/api/events") as events:
        assert events.content_type == "text/event-stream"
        first = await next_version(events.content)
        await sandbox.post("message", {"user": OWNER, "channel": "C0GENERAL1", "text": "hello <team> & all"})
        assert await next_version(events.content) > first
    [said] = await sandbox.messages(OWNER, "C0GENERAL1")
    assert (said["text"], said["sender"]["name"]) == ("hello &lt;team&gt; &amp; all", "Olivia Owner")


# ---- Slack's delivery rules, against an app that misbehaves on purpose --------------------------------

Handle = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def stub_app(handle: Handle) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An app at /slack/events that answers with `handle(request, n)` for its n-th request (from 0)."""
    seen: list[web.Request] = []

    async def events(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        return await handle(request, len(seen) - 1)

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/slack/events", seen
    finally:
        await runner.cleanup()


async def test_a_command_not_acknowledged_within_the_ack_timeout_shows_slacks_error_and_is_not_resent() -> (
    None
):
    release = asyncio.Event()

    async def stuck(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    async with stub_app(stuck) as (bot_url, seen):
        server = await SandboxServer(bot_url=bot_url, ack_timeout_s=0.2).start()
        try:
            answer = await server.interactions.message(OWNER, QUEUE, "/queue list")
            assert (answer.ok, answer.error) == (False, "operation_timeout")
            [told] = server.page.state(OWNER, QUEUE)["conversation"]["messages"]
            assert told["sender"]["name"] == "Slackbot" and told["ephemeral"] is True
            assert told["text"] == '`/queue` failed with the error "operation_timeout"'
            assert [r.headers.get("X-Slack-Retry-Num") for r in seen] == [None]
        finally:
            release.set()
            await server.close()


async def test_an_event_not_acknowledged_in_time_is_resent_signed_anew_with_slacks_retry_headers() -> None:
    release = asyncio.Event()
    verifier = SignatureVerifier("sandbox-signing-secret")

    async def slow_once(request: web.Request, n: int) -> web.StreamResponse:
        if n == 0:
            await release.wait()
        return web.Response()

    async with stub_app(slow_once) as (bot_url, seen):
        server = await SandboxServer(
            bot_url=bot_url, ack_timeout_s=0.2, event_retry_delays_s=(0, 0, 0)
        ).start()
        try:
            server.interactions.open_app(OWNER)

            async def resent() -> bool:
                return len(seen) >= 2

            await wait_for(resent)
            retry = [
                (r.headers.get("X-Slack-Retry-Num"), r.headers.get("X-Slack-Retry-Reason")) for r in seen
            ]
            assert retry == [(None, None), ("1", "http_timeout")]
            for request in seen:
                body = await request.read()
                assert verifier.is_valid_request(body, dict(request.headers))
                assert json.loads(body)["event"]["type"] == "app_home_opened"
        finally:
            release.set()
            await server.close()


async def test_a_click_when_the_app_is_unreachable_is_dispatch_failed() -> None:
    server = await SandboxServer(bot_url=f"http://127.0.0.1:{free_port()}/slack/events").start()
    try:
        answer = await server.interactions.message(GUEST, QUEUE, "/queue help")
        assert (answer.ok, answer.error) == (False, "dispatch_failed")
    finally:
        await server.close()


async def test_the_sandbox_for_people_has_slacks_steady_rate_limits() -> None:
    server = await SandboxServer(bot_url="http://127.0.0.1:9/slack/events").start()
    try:
        assert server.fake.faults.steady == dict(SLACK_LIMITS)
        client = AsyncWebClient(token=server.token, base_url=server.api_url)
        burst = SLACK_LIMITS["chat.postMessage"].burst
        for n in range(burst):
            await client.chat_postMessage(channel=QUEUE, text=f"message {n}")
        with pytest.raises(SlackApiError) as limited:
            await client.chat_postMessage(channel=QUEUE, text="one too many")
        assert limited.value.response.status_code == 429
        assert limited.value.response["error"] == "ratelimited"
        assert int(limited.value.response.headers["Retry-After"]) >= 1
        await client.chat_postMessage(channel="C0GENERAL1", text="another channel has its own bucket")
    finally:
        await server.close()


@pytest.mark.parametrize("saved", ["{not json", '{"messages": {"C0QUEUE001": 7}}', "[]"])
async def test_a_saved_workspace_it_cannot_read_is_ignored_and_the_sandbox_starts_empty(
    tmp_path: Path, saved: str
) -> None:
    state = tmp_path / "queuebot.sandbox.json"
    state.write_text(saved)
    server = await SandboxServer(bot_url="http://127.0.0.1:9/slack/events", state_file=state).start()
    try:
        assert server.page.state(OWNER, QUEUE)["conversation"]["messages"] == []
        await server.interactions.message(OWNER, QUEUE, "written over")
    finally:
        await server.close()
    assert "written over" in state.read_text()


# ---- `queuebot run` with no credentials ------------------------------------------------------------


async def test_a_restart_keeps_the_conversations_and_seeds_the_demo_work_only_once(
    sqlite_template: Path, tmp_path: Path, types: Registry
) -> None:
    engine, url = sqlite_engine(sqlite_template, tmp_path, types)
    question = "Send the new onboarding email to all customers today?"
    try:
        async with running_sandbox(engine, url) as first:
            posted = await first.wait_for_message(
                OWNER, lambda m: f"Decision needed: {question}" in str(m["blocks"])
            )
            assert "demo work: Q-1 demo.ask, Q-2 demo.review, Q-3 demo.triage" in first.announced
        assert (tmp_path / "queuebot.sandbox.json").exists()
        async with running_sandbox(engine, url) as second:
            kept = [m for m in await second.messages(OWNER) if question in str(m.get("blocks"))]
            assert [(m["ts"], m["blocks"]) for m in kept] == [(posted["ts"], posted["blocks"])]
            assert not [line for line in second.announced if line.startswith("demo work")]
        assert [job.ref for job in await engine.store.jobs.list()] == ["Q-3", "Q-2", "Q-1"]
    finally:
        await engine.store.close()


async def test_queuebot_run_with_no_slack_credentials_serves_the_sandbox_page_and_the_bot(
    tmp_path: Path,
) -> None:
    port, bot_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_") and k != "QUEUEBOT_CONFIG"}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'queuebot.db'}", PORT=str(bot_port), SANDBOX_PORT=str(port)
    )
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [str(QUEUEBOT), "run"], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr
        )
    try:
        async with aiohttp.ClientSession() as http:

            async def serving() -> bool:
                assert process.poll() is None, err.read_text()
                try:
                    async with (
                        http.get(f"http://127.0.0.1:{bot_port}/healthz") as health,
                        http.get(f"http://127.0.0.1:{port}/") as page,
                    ):
                        return (
                            health.status == 200 and page.status == 200 and "message-box" in await page.text()
                        )
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(serving, timeout_s=PROCESS_TIMEOUT_S, interval_s=0.2)

            async def decision_posted() -> bool:
                params = {"user": OWNER, "conversation": QUEUE}
                async with http.get(f"http://127.0.0.1:{port}/sandbox/api/state", params=params) as state:
                    return "Decision needed" in json.dumps((await state.json())["conversation"]["messages"])

            await wait_for(decision_posted, timeout_s=PROCESS_TIMEOUT_S, interval_s=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, err.read_text()
    assert (
        f"queuebot sandbox workspace: http://127.0.0.1:{port} — no Slack credentials set" in out.read_text()
    )
    assert "Traceback" not in err.read_text()
