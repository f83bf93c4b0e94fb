"""Scenario 7, security: unsigned, wrongly signed, replayed, tampered and stale requests are 401 and change
nothing; people outside a decision's answerer policy cannot answer, approve, pause or cancel, and each
refusal is audited; a button value naming another job's decision is refused; the bot token, the signing
secret and a database password never reach a log, the console or the evidence trail; the kill switch stops
new claims at once and running jobs at their next heartbeat."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from bot import delivery as delivery_module
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import job_type
from bot.outcomes import Review
from bot.runtime import Worker
from bot.settings import Config
from handlers.actions import NOT_OURS
from sandbox.signed_requests import SlackRequest, signature
from store.models import AnswererPolicy
from store.states import JobState
from tests.conftest import fast_config
from tests.helpers import drain, wait_for, wait_for_state
from tests.reliability.conftest import CHANNEL, OWNER, Workspace, snapshot
from tests.reliability.processes import QueuebotProcess

pytestmark = pytest.mark.reliability

ADMIN = "UADMIN0001"
GUEST = "UGUEST0001"
OTHER_OWNER = "UREVIEW001"


class Empty(BaseModel):
    pass


@pytest.fixture
def config() -> Config:
    """Admins configured: only they (and a job's owner) may operate; the default answerers are the owner
    and admins."""
    return fast_config(admins=[ADMIN])


def _owner_only_types(engine: Engine) -> None:
    @job_type("test.owner_only", input=Empty, lane="fast", into=engine.types)
    async def owner_only(ctx: JobContext, data: Empty) -> str:
        return (await ctx.ask("go", "Go?", ["yes", "no"])).value

    @job_type(
        "test.anyone", input=Empty, lane="fast", answerers=AnswererPolicy(anyone=True), into=engine.types
    )
    async def anyone(ctx: JobContext, data: Empty) -> str:
        return (await ctx.ask("go", "Go?", ["yes", "no"])).value

    @job_type("test.owner_review", input=Empty, lane="fast", into=engine.types)
    async def owner_review(ctx: JobContext, data: Empty) -> Review:
        return Review(proposal="Dear customer…", summary="a draft", why="customer-facing")


async def _posted(engine: Engine, ws: Workspace, type_name: str, owner: str = OWNER) -> tuple[int, int, str]:
    """(job id, decision id, message ts) of a job whose decision is posted in the channel."""
    job_id = (await engine.enqueue(type_name, {}, channel=CHANNEL, owner=owner)).job.id
    await drain(engine)
    await ws.deliver()
    [decision] = await engine.store.decisions.for_job(job_id)
    assert decision.message_ts is not None
    return job_id, decision.id, decision.message_ts


async def _send_raw(url: str, request: SlackRequest, drop: tuple[str, ...]) -> int:
    headers = {k: v for k, v in request.headers.items() if k not in drop}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=request.body, headers=headers) as response,
    ):
        return response.status


async def test_unsigned_wrong_replayed_tampered_and_stale_requests_are_401_and_change_nothing(
    engine: Engine, workspace: Workspace
) -> None:
    _owner_only_types(engine)
    _, _, ts = await _posted(engine, workspace, "test.anyone")
    slack, fake = workspace.slack, workspace.fake
    click = slack.block_actions(OWNER, "answer:yes", channel=CHANNEL, message_ts=ts)
    command = slack.slash_command(OWNER, "pause all", channel=CHANNEL)
    captured = slack.stale(click, age=600)  # a click captured ten minutes ago
    now = int(time.time())
    tampered_body = click.body.replace(b"answer%3Ayes", b"answer%3Ano").replace(b"%3Ayes", b"%3Ano")
    assert tampered_body != click.body
    refused = {
        "wrong secret": slack.wrong_secret(click),
        "stale by 10 minutes": captured,
        "stale by 5 minutes and a second": slack.stale(click, age=301),
        "replayed signature, fresh timestamp": dataclasses.replace(captured, timestamp=now),
        "tampered body": dataclasses.replace(click, body=tampered_body),
        "signed for another body": dataclasses.replace(click, signature=command.signature),
        "command with a wrong secret": slack.wrong_secret(command),
        "stale command": slack.stale(command, age=400),
        "future timestamp": click.resigned(fake.signing_secret, timestamp=now + 600),
    }
    before = await snapshot(engine)
    calls = len(fake.calls)
    for name, request in refused.items():
        assert (await slack.send(request)).status == 401, name
    for drop in [
        ("X-Slack-Signature",),
        ("X-Slack-Request-Timestamp",),
        ("X-Slack-Signature", "X-Slack-Request-Timestamp"),
    ]:
        assert await _send_raw(slack.bot_url, click, drop) == 401, drop
    assert await snapshot(engine) == before
    assert len(fake.calls) == calls and not fake.response_posts(click.response_url or "")
    assert len(fake.calls) == calls and not fake.response_posts(command.response_url or "")

    assert (await slack.send(click)).status == 200  # the same click, correctly signed and fresh, counts
    [job] = await engine.store.jobs.list()
    await wait_for_state(engine, job.id, JobState.READY)


async def test_people_outside_the_policy_cannot_answer_approve_pause_or_cancel_and_are_audited(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    _owner_only_types(engine)
    slack, fake = workspace.slack, workspace.fake
    asked, _, asked_ts = await _posted(engine, workspace, "test.owner_only")
    reviewed, _, review_ts = await _posted(engine, workspace, "test.owner_review")
    before = {job_id: (await engine.store.jobs.get(job_id)).state for job_id in (asked, reviewed)}

    async def guest_clicks(action_id: str, ts: str) -> str:
        click = slack.block_actions(GUEST, action_id, channel=CHANNEL, message_ts=ts)
        assert (await slack.send(click)).status == 200
        await fake.wait_for(lambda: bool(fake.response_posts(click.response_url or "")), timeout=10)
        return str(fake.response_posts(click.response_url or "")[-1]["text"])

    async def guest_says(text: str) -> str:
        reply = await slack.send(slack.slash_command(GUEST, text, channel=CHANNEL))
        assert reply.status == 200
        return reply.text

    assert "may not answer" in await guest_clicks("answer:yes", asked_ts)
    assert "may not answer" in await guest_clicks("answer:approve", review_ts)
    assert "may not cancel" in await guest_says(f"cancel Q-{asked}")
    assert "may not retry" in await guest_says(f"retry Q-{reviewed}")
    assert "may not pause" in await guest_says(f"pause Q-{asked}")
    with caplog.at_level(logging.INFO):
        assert "may not pause" in await guest_says("pause all")
        assert "may not resume" in await guest_says("resume all")
    assert await engine.store.controls.pauses() == []

    # Reject would ask for a reason: someone who may not answer is refused before the form opens.
    assert "may not answer" in await guest_clicks("answer:reject", review_ts)
    assert fake.calls_to("views.open") == []

    for job_id, state in before.items():
        assert (await engine.store.jobs.get(job_id)).state is state
    denied = {
        job_id: sorted(str(e.reason) for e in await engine.store.jobs.events(job_id) if e.kind == "denied")
        for job_id in before
    }
    assert denied == {
        asked: ["not permitted to answer D-1", "not permitted to cancel", "not permitted to pause"],
        reviewed: ["not permitted to answer D-2", "not permitted to answer D-2", "not permitted to retry"],
    }
    audited = [r.getMessage() for r in caplog.records if "event=denied" in r.getMessage()]
    assert any(f"actor={GUEST} action=pause scope=all" in line for line in audited), audited
    assert any(f"actor={GUEST} action=resume scope=all" in line for line in audited), audited


async def test_a_button_value_naming_another_job_s_decision_is_refused(
    engine: Engine, workspace: Workspace
) -> None:
    _owner_only_types(engine)
    slack, fake = workspace.slack, workspace.fake
    mine, _, my_ts = await _posted(engine, workspace, "test.owner_only", owner=OWNER)
    theirs, their_decision, _ = await _posted(engine, workspace, "test.owner_only", owner=OTHER_OWNER)
    open_to_all, open_decision, _ = await _posted(engine, workspace, "test.anyone", owner=OTHER_OWNER)
    before = await snapshot(engine)

    for target in (their_decision, open_decision, 999):
        genuine = slack.block_actions(OWNER, "answer:yes", channel=CHANNEL, message_ts=my_ts)
        payload = json.loads(json.dumps(genuine.payload))
        payload["actions"][0]["value"] = f"D-{target}:yes"  # the click on my message names another decision
        forged = SlackRequest.signed(
            fake.signing_secret, genuine.timestamp, payload, form={"payload": json.dumps(payload)}
        )
        assert forged.signature == signature(fake.signing_secret, forged.timestamp, forged.body)
        assert (await slack.send(forged)).status == 200
        await fake.wait_for(lambda g=genuine: bool(fake.response_posts(g.response_url or "")), timeout=10)
        [reply] = fake.response_posts(genuine.response_url or "")
        assert reply["text"] == NOT_OURS

    assert await snapshot(engine) == before
    for job_id in (mine, theirs, open_to_all):
        assert (await engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION


async def test_tokens_and_secrets_never_reach_logs_the_console_or_the_trail(
    engine: Engine,
    workspace: Workspace,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _owner_only_types(engine)
    slack, fake = workspace.slack, workspace.fake
    secrets = [fake.token, fake.signing_secret]
    monkeypatch.setattr(delivery_module, "RETRY_BASE_S", 0.0)  # a failed post is due again at once
    with caplog.at_level(logging.DEBUG):
        reply = await slack.send(slack.slash_command(OWNER, "add test.anyone", channel=CHANNEL))
        assert reply.text.startswith("Created Q-1")
        await slack.send(slack.wrong_secret(slack.slash_command(OWNER, "stats", channel=CHANNEL)))
        await drain(engine)
        fake.fail("chat.postMessage", times=1, status=500)
        fake.rate_limit("chat.postMessage", times=1)
        for _ in range(3):
            await workspace.deliver()
        [decision] = await engine.store.decisions.for_job(1)
        assert decision.message_ts is not None
        click = slack.block_actions(OWNER, "answer:yes", channel=CHANNEL, message_ts=decision.message_ts)
        await slack.send(click)
        await wait_for_state(engine, 1, JobState.READY)
        await drain(engine)
        await workspace.deliver()
        await slack.send(slack.slash_command(OWNER, "show Q-1", channel=CHANNEL))
        await slack.send(slack.app_home_opened(OWNER))
        await fake.wait_for(lambda: fake.home_view(OWNER) is not None, timeout=10)
    shown = caplog.text + "".join(capsys.readouterr())
    assert "chat.postMessage" in shown and "Authorization" in shown  # slack_sdk's DEBUG lines were captured
    stored = repr(await snapshot(engine))
    for secret in secrets:
        assert secret not in shown, "a secret reached the logs"
        assert secret not in stored, "a secret reached the database"
    assert "xoxb-" not in shown and "xoxb-" not in stored

    if engine.store.db.is_postgres:  # a password in DATABASE_URL never appears in `queuebot -v` output
        password = "pw-never-shown-4512"
        url = engine.store.db.url.replace("postgres@", f"postgres:{password}@", 1)
        assert password in url
        (tmp_path / "queuebot.toml").write_text("[worker]\npoll_interval_s = 0.05\n", encoding="utf-8")
        worker = QueuebotProcess(tmp_path, url, "work", "--until-idle").start()
        assert worker.proc is not None
        worker.proc.wait(60)
        assert worker.proc.returncode == 0, worker.tail()
        unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)
        bad = QueuebotProcess(tmp_path, unreachable, "status").start()
        assert bad.proc is not None and bad.proc.wait(60) == 1
        for process in (worker, bad):
            assert password not in process.tail(100_000), process.tail()
        assert "***" in bad.tail()


async def test_the_kill_switch_stops_claims_at_once_and_running_jobs_at_their_next_heartbeat(
    engine: Engine, workspace: Workspace
) -> None:
    _owner_only_types(engine)
    slack = workspace.slack
    asked, asked_decision, _ = await _posted(engine, workspace, "test.anyone")
    sleeper = (await engine.enqueue("demo.sleep", {"seconds": 60})).job.id
    worker = Worker(engine)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop=stop))
    try:
        await wait_for_state(engine, sleeper, JobState.RUNNING)
        reply = await slack.send(slack.slash_command(ADMIN, "pause all", channel=CHANNEL))
        paused_at = time.monotonic()
        assert reply.text.startswith("Paused all")
        assert (await engine.store.jobs.get(sleeper)).state is JobState.PAUSED

        await wait_for(lambda: _no_runs(worker), timeout_s=10)
        stopped_after = time.monotonic() - paused_at
        events = [e.kind for e in await engine.store.jobs.events(sleeper)]
        assert events[-1] == "paused" and "completed" not in events

        # New work while paused: answered decisions and fresh jobs are never claimed.
        await engine.answer(asked_decision, "yes", actor=OWNER)
        fresh = (await engine.enqueue("demo.echo", {"text": "hi"})).job.id
        assert (await engine.store.jobs.get(asked)).state is JobState.READY
        assert (await engine.store.jobs.get(fresh)).state is JobState.PAUSED
        for lane in engine.config.lanes:
            assert await engine.store.claims.claim(lane, 10, worker="probe") == []
        for _ in range(5):  # the worker's claim loops have polled meanwhile
            await asyncio.sleep(engine.config.worker.poll_interval_s)
        assert (await engine.store.jobs.get(asked)).state is JobState.READY

        assert (await slack.send(slack.slash_command(ADMIN, "resume all", channel=CHANNEL))).text.startswith(
            "Resumed"
        )
        await wait_for_state(engine, asked, JobState.COMPLETED)
        await wait_for_state(engine, fresh, JobState.COMPLETED)
        await engine.cancel(sleeper, actor="cli")
    finally:
        stop.set()
        await running
    interval = engine.config.worker.heartbeat_interval_s
    print(
        f"\n[kill switch] {engine.store.db.dialect}: running job stopped "
        f"{stopped_after:.2f} s after `pause all` (heartbeat every {interval} s)"
    )
    assert stopped_after < 10


async def _no_runs(worker: Worker) -> bool:
    return not worker.runs
