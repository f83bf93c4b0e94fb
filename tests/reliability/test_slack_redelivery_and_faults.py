"""Scenario 5, Slack redelivery and faults: the same command and the same click delivered four times (with
X-Slack-Retry-Num), and a Web API that answers 429, 500 and 503 and times out for a while, both before
Slack acts (the request is lost) and after (the answer is). Afterwards every notification is in Slack
exactly once, each decision message updated after it was posted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from bot import delivery as delivery_module
from bot.delivery import delivery_client
from bot.engine import Engine
from sandbox.fake_slack import FakeSlack
from store.states import DecisionState, JobState
from tests.helpers import drain, wait_for, wait_for_state
from tests.reliability.conftest import CHANNEL, OWNER, Workspace, serve_bot

pytestmark = pytest.mark.reliability

#: The sender's Web API timeout in this test (Slack's client waits 30 s; the faults here last seconds).
CLIENT_TIMEOUT_S = 0.5
#: The outbox's backoff base in this test, so retried rows come round in the test's time.
RETRY_BASE_S = 0.05
#: Time for the faults to be worked through; hitting it means a notification is stuck.
SETTLE_TIMEOUT_S = 60.0


async def test_a_command_and_a_click_delivered_four_times_act_once(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queuebot.handlers")
    slack, fake = workspace.slack, workspace.fake
    command = slack.slash_command(OWNER, 'add demo.ask question="Ship it?"', channel=CHANNEL)
    replies = await asyncio.gather(
        *(slack.send(d) for d in [command, *(slack.retried(command, n) for n in (1, 2, 3))])
    )
    assert [r.status for r in replies] == [200] * 4
    texts = [r.text for r in replies]
    assert sum(t.startswith("Created Q-1 ") for t in texts) == 1
    assert sum(t.startswith("Q-1 already exists for this request") for t in texts) == 3
    [job] = await engine.store.jobs.list()
    assert [e.kind for e in await engine.store.jobs.events(job.id)].count("enqueued") == 1

    await drain(engine)
    await workspace.deliver()
    [posted] = fake.calls_to("chat.postMessage", ok=True)
    click = slack.block_actions(
        "UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=posted.response["ts"]
    )
    sent = await asyncio.gather(
        *(slack.send(d) for d in [click, *(slack.retried(click, n) for n in (1, 2, 3))])
    )
    assert [d.status for d in sent] == [200] * 4

    async def repeats_seen() -> bool:
        return sum("event=click_repeated" in r.getMessage() for r in caplog.records) == 3

    await wait_for(repeats_seen)  # the redeliveries were recognised as the same click...
    assert fake.response_posts(click.response_url or "") == []  # ...and nobody was told anything twice
    await wait_for_state(engine, job.id, JobState.READY)
    assert [e.kind for e in await engine.store.jobs.events(job.id)].count("decision_answered") == 1
    await workspace.deliver()
    await workspace.deliver()
    assert len(fake.calls_to("chat.update", ok=True)) == 1
    await drain(engine)
    assert (await engine.store.jobs.get(job.id)).result == "approve"


@dataclass
class LostCalls:
    """Web API calls that time out on the client: the request lost before Slack acts, or Slack acts and
    its answer is lost."""

    plan: dict[str, list[str]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    lost: int = 0

    def lose(self, method: str, what: str, times: int) -> None:
        assert what in ("request", "response")
        self.plan.setdefault(method, []).extend([what] * times)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        planned = self.plan.get(request.match_info.get("method", ""))
        if not planned:
            return await handler(request)
        what = planned.pop(0)
        self.lost += 1
        response = await handler(request) if what == "response" else web.Response(status=504)
        try:
            await asyncio.wait_for(self.release.wait(), CLIENT_TIMEOUT_S * 4)  # the client gave up long ago
        except TimeoutError:
            pass
        return response


async def test_web_api_faults_for_a_while_then_every_notification_once_in_order(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "RETRY_BASE_S", RETRY_BASE_S)
    lost = LostCalls()
    fake = FakeSlack()
    fake.app.middlewares.append(lost.middleware)
    await fake.start()
    client = delivery_client(fake.token, fake.api_url)
    client.timeout = CLIENT_TIMEOUT_S  # type: ignore[assignment]  # slack_sdk says int; aiohttp takes any
    stop = asyncio.Event()
    try:
        async with serve_bot(engine, fake, client) as ws:
            asks = [
                (
                    await engine.enqueue("demo.ask", {"question": f"Ship {n}?"}, channel=CHANNEL, owner=OWNER)
                ).job.id
                for n in range(6)
            ]
            triaged = [(await engine.enqueue("demo.triage", {}, owner=OWNER)).job.id for _ in range(2)]
            await drain(engine)

            fake.rate_limit("chat.postMessage", times=2, retry_after=1)
            fake.fail("chat.postMessage", times=2, status=500)
            lost.lose("chat.postMessage", "request", 2)
            lost.lose("chat.postMessage", "response", 2)
            lost.lose("conversations.open", "request", 1)
            sender = asyncio.create_task(ws.delivery.run(stop, poll_s=0.05))

            async def all_posted() -> bool:
                return all(d.message_ts for d in await _decisions(engine, asks))

            await wait_for(all_posted, timeout_s=SETTLE_TIMEOUT_S)
            fake.fail("chat.update", times=2, status=503)
            fake.rate_limit("chat.update", times=1, retry_after=1)
            lost.lose("chat.update", "response", 1)
            lost.lose("chat.update", "request", 1)
            for job_id in asks[:4]:
                [decision] = await engine.store.decisions.for_job(job_id)
                await engine.answer(decision.id, "approve", actor="UREVIEW001")
            await engine.cancel(asks[4], actor="cli", reason="not needed")

            async def settled() -> bool:
                return all(item.state != "pending" for item in await engine.store.outbox.all()) and not any(
                    lost.plan.values()
                )

            await wait_for(settled, timeout_s=SETTLE_TIMEOUT_S)
            stop.set()
            await sender
            outbox = await engine.store.outbox.all()
            assert {item.state for item in outbox} == {"sent"}, [(i.kind, i.state, i.error) for i in outbox]
            _check_channel(fake, await _decisions(engine, asks), asks[4])
            _check_dms(fake, triaged)
            rejected = [c for c in fake.calls if not c.ok]
            print(
                f"\n[slack faults] {engine.store.db.dialect}: {len(outbox)} notifications, "
                f"{len(rejected)} calls refused (429/5xx), {lost.lost} timed out; "
                "all delivered once, in order"
            )
            assert len(rejected) == 2 + 2 + 2 + 1 and lost.lost == 7
    finally:
        stop.set()
        lost.release.set()
        await fake.close()


async def _decisions(engine: Engine, job_ids: list[int]) -> list[Any]:
    return [d for job_id in job_ids for d in await engine.store.decisions.for_job(job_id)]


def _check_channel(fake: FakeSlack, decisions: list[Any], cancelled: int) -> None:
    """One message per decision, each closed one updated to its outcome after it was posted, and the
    cancelled job's note once."""
    messages = fake.messages(CHANNEL)
    by_ts = {m["ts"]: m for m in messages}
    assert len(by_ts) == len(messages)
    decision_ts = [d.message_ts for d in decisions]
    assert len(set(decision_ts)) == len(decisions) and set(decision_ts) <= set(by_ts)
    notes = [m for m in messages if m["ts"] not in decision_ts]
    assert [m["text"] for m in notes] == [f"Q-{cancelled} (demo.ask) is cancelled: not needed"]
    posts = {c.response["ts"]: c.time for c in fake.calls_to("chat.postMessage", ok=True)}
    for decision in decisions:
        shown = str(by_ts[decision.message_ts]["blocks"])
        updates = [
            c.time for c in fake.calls_to("chat.update", ok=True) if c.args["ts"] == decision.message_ts
        ]
        if decision.state is DecisionState.OPEN:
            assert not updates and "answer:approve" in shown
            continue
        assert updates and min(updates) > posts[decision.message_ts]
        expected = "answered *approve*" if decision.state is DecisionState.ANSWERED else "no longer needs"
        assert expected in shown and "answer:approve" not in shown


def _check_dms(fake: FakeSlack, triaged: list[int]) -> None:
    """Each pending job's owner note once, by DM."""
    texts = [m["text"] for m in fake.messages(fake.dm_channel(OWNER))]
    assert sorted(text.split(" ", 1)[0] for text in texts) == sorted(f"Q-{job_id}" for job_id in triaged), (
        texts
    )
    assert all("is pending" in text for text in texts), texts


async def test_an_update_racing_its_post_on_another_replica_is_not_lost(
    engine: Engine, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas deliver. Replica A posts a decision's message; while it does, someone answers, and
    replica B takes the update. A records the message and settles its row exactly while B is between its two
    looks (at the decision and at the post's row): a pause of milliseconds on a busy replica."""
    from bot.delivery import OutboxDelivery
    from store import Store

    fake = workspace.fake
    other = Engine(Store.connect(engine.store.db.url), engine.config, types=engine.types)
    poster, updater = workspace.delivery, OutboxDelivery(other, delivery_client(fake.token, fake.api_url))
    job_id = (await engine.enqueue("demo.ask", {"question": "Ship?"}, channel=CHANNEL, owner=OWNER)).job.id
    await drain(engine)
    [decision] = await engine.store.decisions.for_job(job_id)
    answered, b_looked_once, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    record_message = engine.store.decisions.set_message

    async def a_records_the_message(decision_id: int, *, channel: str, ts: str) -> None:
        await other.answer(decision.id, "approve", actor="UREVIEW001")  # posted, and answered at once
        answered.set()
        await b_looked_once.wait()
        await record_message(decision_id, channel=channel, ts=ts)

    looks = 0

    def b_looks(real: Any) -> Any:
        async def look(*args: Any) -> Any:
            nonlocal looks
            if not answered.is_set():  # the answer itself, not replica B
                return await real(*args)
            looks += 1
            if looks == 2:
                await a_done.wait()  # B's second look comes after A has finished
            found = await real(*args)
            b_looked_once.set()
            return found

        return look

    async def replica_a() -> None:
        [opened] = await engine.store.outbox.lease_due()
        assert await poster._deliver_one(opened) == 1
        a_done.set()

    async def replica_b() -> None:
        await answered.wait()
        [closed] = await other.store.outbox.lease_due()
        await updater._deliver_one(closed)

    monkeypatch.setattr(engine.store.decisions, "set_message", a_records_the_message)
    monkeypatch.setattr(other.store.decisions, "get", b_looks(other.store.decisions.get))
    monkeypatch.setattr(
        other.store.outbox, "pending_for_decision", b_looks(other.store.outbox.pending_for_decision)
    )
    try:
        await asyncio.wait_for(asyncio.gather(replica_a(), replica_b()), 20)
        monkeypatch.undo()

        async def settled() -> bool:
            await updater.deliver_due()
            return all(item.state == "sent" for item in await engine.store.outbox.all())

        await wait_for(settled)
    finally:
        monkeypatch.undo()
        await other.store.close()
    [posted] = fake.calls_to("chat.postMessage", ok=True)
    assert [call.args["ts"] for call in fake.calls_to("chat.update", ok=True)] == [posted.response["ts"]]
    assert "answered *approve*" in str(fake.message(CHANNEL, posted.response["ts"])["blocks"])
