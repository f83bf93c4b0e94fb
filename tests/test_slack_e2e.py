"""The Bolt app over real HTTP: signed clicks from the fake Slack answer decisions, the message is updated
in place through the outbox, and refused clicks are told why and change nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import job_type
from bot.slack_app import EVENTS_PATH
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests, SlackRequest
from store.states import JobState
from tests.conftest import fast_config
from tests.helpers import drain, free_port, running_bot, wait_for, wait_for_state
from tests.slack_workspace import Workspace, serve_bot

CHANNEL = "C0QUEUE001"


@pytest.fixture
async def workspace(engine: Engine) -> AsyncIterator[Workspace]:
    async with FakeSlack() as fake, serve_bot(engine, fake) as served:
        yield served


async def posted_decision(
    engine: Engine, ws: Workspace, job_type: str, data: dict[str, object]
) -> tuple[int, str]:
    job_id = (await engine.enqueue(job_type, data, channel=CHANNEL, owner="UOWNER0001")).job.id
    await drain(engine)
    await ws.deliver()
    [decision] = await engine.store.decisions.for_job(job_id)
    assert decision.message_ts is not None
    return job_id, decision.message_ts


async def test_a_click_answers_and_the_message_is_updated_in_place(
    engine: Engine, workspace: Workspace
) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    click = workspace.slack.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
    assert (await workspace.slack.send(click)).status == 200
    await wait_for_state(engine, job_id, JobState.READY)  # Bolt acks first, then the listener acts
    await workspace.deliver()
    message = workspace.fake.message(CHANNEL, ts)
    assert "<@UREVIEW001> answered *approve*" in str(message["blocks"])
    await drain(engine)
    assert (await engine.store.jobs.get(job_id)).result == "approve"


async def test_a_second_click_is_told_who_answered_and_changes_nothing(
    engine: Engine, workspace: Workspace
) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    first = workspace.slack.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
    late = workspace.slack.block_actions("UGUEST0001", "answer:deny", channel=CHANNEL, message_ts=ts)
    await workspace.slack.send(first)
    await wait_for_state(engine, job_id, JobState.READY)
    trail = await engine.store.jobs.events(job_id)
    assert (await workspace.slack.send(late)).status == 200
    await workspace.fake.wait_for(lambda: bool(workspace.fake.response_posts(late.response_url or "")))
    [reply] = workspace.fake.response_posts(late.response_url or "")
    assert reply["text"] == "D-1 was already answered by UREVIEW001 with approve"
    assert reply["response_type"] == "ephemeral"
    assert await engine.store.jobs.events(job_id) == trail


async def test_a_click_by_someone_outside_the_policy_is_refused_and_audited(
    engine: Engine, workspace: Workspace
) -> None:
    class Empty(BaseModel):
        pass

    @job_type("test.owner_only", input=Empty, lane="fast", into=engine.types)
    async def owner_only(ctx: JobContext, data: Empty) -> str:  # the default policy: owner and admins
        return (await ctx.ask("go", "Go?", ["yes", "no"])).value

    job_id, ts = await posted_decision(engine, workspace, "test.owner_only", {})
    click = workspace.slack.block_actions("UGUEST0001", "answer:yes", channel=CHANNEL, message_ts=ts)
    assert (await workspace.slack.send(click)).status == 200
    await workspace.fake.wait_for(lambda: bool(workspace.fake.response_posts(click.response_url or "")))
    [reply] = workspace.fake.response_posts(click.response_url or "")
    assert reply["text"] == "UGUEST0001 may not answer D-1; it is for the job's owner, admins"
    assert (await engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION
    denied = [e for e in await engine.store.jobs.events(job_id) if e.kind == "denied"]
    assert [e.actor for e in denied] == ["UGUEST0001"]


async def test_a_bad_signature_is_401_and_changes_nothing(engine: Engine, workspace: Workspace) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    click = workspace.slack.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
    assert (await workspace.slack.send(workspace.slack.wrong_secret(click))).status == 401
    assert (await workspace.slack.send(workspace.slack.stale(click, age=600))).status == 401
    assert (await engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION


async def test_queuebot_run_serves_slack_works_the_queue_and_delivers_on_its_own(engine: Engine) -> None:
    from bot.settings import Settings

    async with FakeSlack() as fake:
        settings = Settings(
            slack_bot_token=fake.token,
            slack_signing_secret=fake.signing_secret,
            slack_api_url=fake.api_url,
            port=free_port(),
        )
        async with running_bot(engine, settings) as base_url:
            job_id = (await engine.enqueue("demo.ask", {"question": "Ship?"}, channel=CHANNEL)).job.id
            await fake.wait_for(lambda: bool(fake.calls_to("chat.postMessage", ok=True)), timeout=10)
            ts = str(fake.calls_to("chat.postMessage", ok=True)[0].response["ts"])
            async with SignedRequests(fake, f"{base_url}{EVENTS_PATH}") as slack:
                click = slack.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
                assert (await slack.send(click)).status == 200
            await wait_for_state(engine, job_id, JobState.COMPLETED)
            await fake.wait_for(lambda: bool(fake.calls_to("chat.update", ok=True)), timeout=10)
            assert "answered *approve*" in str(fake.message(CHANNEL, ts)["blocks"])


async def test_opening_the_home_tab_publishes_the_board_and_what_waits_on_the_viewer(
    engine: Engine, workspace: Workspace
) -> None:
    await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    await engine.enqueue("demo.triage", {}, owner="UOWNER0001")  # pending: waits on its owner
    await drain(engine)
    assert (await workspace.slack.send(workspace.slack.app_home_opened("UOWNER0001"))).status == 200
    await workspace.fake.wait_for(lambda: workspace.fake.home_view("UOWNER0001") is not None)
    home = str(workspace.fake.home_view("UOWNER0001"))
    assert "waiting decision* 1" in home and "pending* 1" in home
    assert "Q-2" in home and "is pending: a ticket id" in home
    assert "D-1" in home  # demo.ask lets anyone answer


async def test_healthz_and_metrics_report_the_queue(engine: Engine, workspace: Workspace) -> None:
    import aiohttp

    await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{workspace.base_url}/healthz") as health:
            assert health.status == 200 and (await health.json()) == {"ok": True}
        async with http.get(f"{workspace.base_url}/metrics") as metrics:
            text = await metrics.text()
    assert 'queuebot_jobs{lane="fast",state="waiting_decision"} 1.0' in text
    assert "queuebot_sla_breaches 0.0" in text


async def test_queue_add_creates_a_job_in_that_channel_and_a_slack_retry_makes_no_second(
    engine: Engine, workspace: Workspace
) -> None:
    command = workspace.slack.slash_command("UOWNER0001", 'add demo.ask question="Ship it?"', channel=CHANNEL)
    first = await workspace.slack.send(command)
    assert first.status == 200
    assert first.text.startswith("Created Q-1 (`demo.ask`, P1, lane fast)")
    again = await workspace.slack.send(workspace.slack.retried(command, 1))
    assert "Q-1 already exists for this request" in again.text
    [job] = await engine.store.jobs.list()
    assert (job.owner, job.channel, job.input) == ("UOWNER0001", CHANNEL, {"question": "Ship it?"})
    await drain(engine)
    await workspace.deliver()
    [posted] = workspace.fake.calls_to("chat.postMessage", ok=True)
    assert posted.args["channel"] == CHANNEL  # decisions go to the channel the job was created in


async def test_queue_text_mistakes_get_usage_and_change_nothing(engine: Engine, workspace: Workspace) -> None:
    replies = []
    for text in ("lsit", "add", "add demo.echo txt=hi", "add nope", "show Q-99", "cancel Q-x"):
        delivery = await workspace.slack.send(
            workspace.slack.slash_command("UGUEST0001", text, channel=CHANNEL)
        )
        assert delivery.status == 200
        replies.append(delivery.text)
    assert "did you mean `list`" in replies[0] and "*Usage*" in replies[0]
    assert "text: Field required" in replies[2]
    assert "unknown job type 'nope'" in replies[3]
    assert replies[4] == "no job Q-99"
    assert await engine.store.jobs.list() == []


async def test_queue_list_show_stats_and_cancel(engine: Engine, workspace: Workspace) -> None:
    async def say(text: str) -> str:
        delivery = await workspace.slack.send(
            workspace.slack.slash_command("UOWNER0001", text, channel=CHANNEL)
        )
        return str(delivery.text)

    await say("add demo.sleep seconds=30")
    assert "*Q-1* `demo.sleep` ready" in await say("list")
    assert "*Q-1* `demo.sleep` ready" in await say("list mine")
    assert "enqueued by UOWNER0001" in await say("show Q-1")
    assert "ready 1" in await say("stats")
    assert await say("cancel Q-1 no longer needed") == "Q-1 cancelled."
    job = await engine.store.jobs.get(1)
    assert (job.state, job.reason) == (JobState.CANCELLED, "no longer needed")


async def test_the_evidence_button_opens_the_whole_trail(engine: Engine, workspace: Workspace) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.review", {"text": "y" * 5000})
    click = workspace.slack.block_actions("UREVIEW001", "show_evidence", channel=CHANNEL, message_ts=ts)
    assert (await workspace.slack.send(click)).status == 200
    await workspace.fake.wait_for(lambda: bool(workspace.fake.calls_to("views.open", ok=True)))
    [opened] = workspace.fake.calls_to("views.open", ok=True)
    shown = str(opened.args["view"])
    assert "Evidence Q-1" in shown and "*proposed* by" in shown and "*claimed* by" in shown
    assert (await engine.store.jobs.get(job_id)).state is JobState.NEEDS_REVIEW  # looking changes nothing


async def submit_comment(ws: Workspace, user: str, text: str) -> int:
    await ws.fake.wait_for(lambda: bool(ws.fake.calls_to("views.open", ok=True)))
    view_id = str(ws.fake.calls_to("views.open", ok=True)[-1].response["view"]["id"])
    submission = ws.slack.view_submission(user, view_id, {"comment": {"comment_text": text}})
    return (await ws.slack.send(submission)).status


async def test_reject_asks_for_a_reason_and_records_it(engine: Engine, workspace: Workspace) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.review", {"text": "draft"})
    click = workspace.slack.block_actions("UREVIEW001", "answer:reject", channel=CHANNEL, message_ts=ts)
    await workspace.slack.send(click)
    assert (await engine.store.jobs.get(job_id)).state is JobState.NEEDS_REVIEW  # nothing until the reason
    assert await submit_comment(workspace, "UREVIEW001", "wrong customer") == 200
    job = await wait_for_state(engine, job_id, JobState.REJECTED)
    assert job.reason == "wrong customer"


async def test_request_changes_runs_the_job_again_with_the_feedback(
    engine: Engine, workspace: Workspace
) -> None:
    job_id, ts = await posted_decision(engine, workspace, "demo.review", {"text": "draft"})
    click = workspace.slack.block_actions("UREVIEW001", "answer:changes", channel=CHANNEL, message_ts=ts)
    await workspace.slack.send(click)
    assert await submit_comment(workspace, "UREVIEW001", "make it shorter") == 200
    await wait_for_state(engine, job_id, JobState.READY)
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.NEEDS_REVIEW and job.result == "draft\n[revised for: make it shorter]"


async def overdue(engine: Engine, job_id: int, by_s: float) -> None:
    """Test set-up: move a job's SLA into the past (the signed requests need the real clock)."""
    from datetime import timedelta

    from store import clock
    from store.schema import jobs

    past = clock.now() - timedelta(seconds=by_s)
    async with engine.store.db.write() as conn:
        await conn.execute(jobs.update().where(jobs.c.id == job_id).values(sla_at=past, sla_next_at=past))


async def escalated_to_owner(engine: Engine, ws: Workspace) -> tuple[int, str, dict[str, Any]]:
    """A pending demo.triage job owned by UOWNER0001, past its SLA: (job id, DM channel, the DM)."""
    from scheduler import rules

    job_id = (await engine.enqueue("demo.triage", {}, owner="UOWNER0001")).job.id
    await drain(engine, rules=False)
    await overdue(engine, job_id, 60)
    assert await rules.climb_escalation_ladders(engine) == 1
    await ws.deliver()
    dm = ws.fake.dm_channel("UOWNER0001")
    [escalation] = [m for m in ws.fake.messages(dm) if "past its SLA" in m["text"]]
    return job_id, dm, escalation


async def test_acknowledge_in_an_escalation_dm_stops_the_ladder(engine: Engine, workspace: Workspace) -> None:
    from scheduler import rules

    job_id, dm, escalation = await escalated_to_owner(engine, workspace)
    click = workspace.slack.block_actions(
        "UOWNER0001", "acknowledge", channel=dm, message_ts=escalation["ts"]
    )
    assert (await workspace.slack.send(click)).status == 200

    async def acknowledged() -> bool:
        return (await engine.store.jobs.get(job_id)).acknowledged_by == "UOWNER0001"

    await wait_for(acknowledged)
    await overdue(engine, job_id, 3600)  # an hour late: the next levels would be due
    assert await rules.climb_escalation_ladders(engine) == 0


async def test_twenty_concurrent_clicks_make_one_answer_and_one_update(
    engine: Engine, workspace: Workspace
) -> None:
    import asyncio

    job_id, ts = await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    people = ["UOWNER0001", "UADMIN0001", "UREVIEW001", "UGUEST0001"]
    clicks = [
        workspace.slack.block_actions(
            people[n % 4], f"answer:{'approve' if n % 2 else 'deny'}", channel=CHANNEL, message_ts=ts
        )
        for n in range(20)
    ]
    statuses = await asyncio.gather(*(workspace.slack.send(click) for click in clicks))
    assert {delivery.status for delivery in statuses} == {200}
    await wait_for_state(engine, job_id, JobState.READY)
    [decision] = await engine.store.decisions.for_job(job_id)
    # Everyone else is told who won; the winner's own repeats of the winning click are not answered.
    others = [c for c in clicks if c.payload["user"]["id"] != decision.answered_by]
    assert len(others) == 15
    await workspace.fake.wait_for(
        lambda: sum(len(workspace.fake.response_posts(c.response_url or "")) for c in others) == 15,
        timeout=10,
    )
    events = await engine.store.jobs.events(job_id)
    assert [e.kind for e in events].count("decision_answered") == 1
    await workspace.deliver()
    assert len(workspace.fake.calls_to("chat.update", ok=True)) == 1


async def test_queue_new_opens_a_form_from_the_type_and_creates_the_job(
    engine: Engine, workspace: Workspace
) -> None:
    command = workspace.slack.slash_command("UOWNER0001", "new demo.flaky", channel=CHANNEL)
    assert (await workspace.slack.send(command)).status == 200
    await workspace.fake.wait_for(lambda: bool(workspace.fake.calls_to("views.open", ok=True)))
    view_id = str(workspace.fake.calls_to("views.open", ok=True)[-1].response["view"]["id"])
    bad = workspace.slack.view_submission("UOWNER0001", view_id, {"field:fail_times": {"value": "many"}})
    refused = await workspace.slack.send(bad)
    assert refused.json()["response_action"] == "errors"
    assert "field:fail_times" in refused.json()["errors"]
    assert await engine.store.jobs.list() == []  # nothing half-written
    good = workspace.slack.view_submission("UOWNER0001", view_id, {"field:fail_times": {"value": "0"}})
    assert (await workspace.slack.send(good)).status == 200
    [job] = await engine.store.jobs.list()
    assert (job.type, job.input, job.owner, job.channel) == (
        "demo.flaky",
        {"fail_times": 0},
        "UOWNER0001",
        CHANNEL,
    )


async def test_a_timeout_with_a_default_updates_the_message(engine: Engine, workspace: Workspace) -> None:
    from datetime import timedelta

    from pydantic import BaseModel as Model

    from store import clock
    from store.schema import decisions

    class Empty(Model):
        pass

    @job_type("test.defaulted", input=Empty, lane="fast", into=engine.types)
    async def defaulted(ctx: JobContext, data: Empty) -> str:
        return (await ctx.ask("go", "Go?", ["yes", "no"], default="no", timeout="1m")).value

    job_id, ts = await posted_decision(engine, workspace, "test.defaulted", {})
    async with engine.store.db.write() as conn:  # test set-up: the minute has passed
        await conn.execute(decisions.update().values(timeout_at=clock.now() - timedelta(seconds=1)))
    [outcome] = await engine.store.decisions.expire_due()
    assert outcome.job.state is JobState.READY
    await workspace.deliver()
    assert "Timed out: the default *no* was used" in str(workspace.fake.message(CHANNEL, ts)["blocks"])
    await drain(engine)
    assert (await engine.store.jobs.get(job_id)).result == "no"


@pytest.mark.parametrize("config", [fast_config(admins=["UADMIN0001"])])  # so operating is not for anyone
async def test_an_escalation_dm_cancels_the_job_for_its_owner_and_refuses_a_guest(
    engine: Engine, workspace: Workspace
) -> None:
    job_id, dm, escalation = await escalated_to_owner(engine, workspace)
    buttons = [e["action_id"] for b in escalation["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["acknowledge", "job_retry", "job_cancel"]

    guest = workspace.slack.block_actions("UGUEST0001", "job_cancel", channel=dm, message_ts=escalation["ts"])
    await workspace.slack.send(guest)
    await workspace.fake.wait_for(lambda: bool(workspace.fake.response_posts(guest.response_url or "")))
    assert "may not cancel" in workspace.fake.response_posts(guest.response_url or "")[0]["text"]
    assert (await engine.store.jobs.get(job_id)).state is JobState.PENDING

    owner = workspace.slack.block_actions("UOWNER0001", "job_cancel", channel=dm, message_ts=escalation["ts"])
    await workspace.slack.send(owner)
    assert (await wait_for_state(engine, job_id, JobState.CANCELLED)).reason == "cancelled by UOWNER0001"


async def test_serving_on_a_port_already_taken_says_so(engine: Engine) -> None:
    import socket

    from bot import app
    from bot.settings import Settings
    from store.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = Settings(slack_bot_token="xoxb-1", slack_signing_secret="s", port=port)
        with pytest.raises(ConfigError, match=f"cannot serve on port {port}: .*set PORT to a free port"):
            await app.serve(engine, settings)


@pytest.mark.parametrize("config", [fast_config(admins=["UADMIN0001"])])
async def test_reject_by_someone_who_may_not_answer_is_refused_before_the_form(
    engine: Engine, workspace: Workspace
) -> None:
    from bot.outcomes import Review

    class Draft(BaseModel):
        text: str

    @job_type("test.owner_review", input=Draft, lane="fast", into=engine.types)
    async def owner_review(ctx: JobContext, data: Draft) -> Review:  # the default policy: owner and admins
        return Review(proposal=data.text, summary="a draft", why="it goes out", question="Send it?")

    job_id, ts = await posted_decision(engine, workspace, "test.owner_review", {"text": "draft"})
    click = workspace.slack.block_actions("UGUEST0001", "answer:reject", channel=CHANNEL, message_ts=ts)
    assert (await workspace.slack.send(click)).status == 200
    await workspace.fake.wait_for(lambda: bool(workspace.fake.response_posts(click.response_url or "")))
    [reply] = workspace.fake.response_posts(click.response_url or "")
    assert reply["text"].startswith("UGUEST0001 may not answer D-1")
    assert workspace.fake.calls_to("views.open") == []
    assert [e.actor for e in await engine.store.jobs.events(job_id) if e.kind == "denied"] == ["UGUEST0001"]


async def test_a_click_is_acknowledged_before_bolt_parses_it(engine: Engine, workspace: Workspace) -> None:
    from bot.early_ack import answers_nothing

    job_id, ts = await posted_decision(engine, workspace, "demo.ask", {"question": "Ship it?"})
    click = workspace.slack.block_actions("UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=ts)
    command = workspace.slack.slash_command("UOWNER0001", "stats", channel=CHANNEL)
    assert answers_nothing(click.body.decode(), crowded=False)
    assert not answers_nothing(command.body.decode(), crowded=False)  # its reply rides on the ack...
    assert answers_nothing(command.body.decode(), crowded=True)  # ...unless a crowd waits for theirs
    # A click no listener takes: Bolt's own path would answer 404; acknowledged first, it gets its 200.
    stray = {**click.payload, "actions": [{**click.payload["actions"][0], "action_id": "no_listener"}]}
    unheard = SlackRequest.signed(
        workspace.fake.signing_secret, int(time.time()), stray, form={"payload": json.dumps(stray)}
    )
    assert (await workspace.slack.send(unheard)).status == 200
    acked = await workspace.slack.send(click)
    assert (acked.status, acked.text) == (200, "")
    await wait_for_state(engine, job_id, JobState.READY)  # Bolt handled it after the acknowledgement
    # A bad signature never gets the early 200.
    assert (await workspace.slack.send(workspace.slack.wrong_secret(click))).status == 401
