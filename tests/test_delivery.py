"""Outbox delivery against the fake Slack over real HTTP: each notification reaches Slack once, decision
messages are updated in place, rate limits and errors are waited out or parked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.delivery import OutboxDelivery, delivery_client
from bot.engine import Engine
from sandbox.fake_slack import FakeSlack
from scheduler import rules
from tests.helpers import drain

CHANNEL = "C0QUEUE001"
OWNER = "UOWNER0001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as running:
        yield running


@pytest.fixture
def delivery(engine: Engine, fake: FakeSlack) -> OutboxDelivery:
    return OutboxDelivery(engine, delivery_client(fake.token, fake.api_url))


async def deliver_all(delivery: OutboxDelivery) -> None:
    while await delivery.deliver_due():
        pass


async def asked(engine: Engine) -> int:
    job_id = (await engine.enqueue("demo.ask", {"question": "Ship it?"}, channel=CHANNEL, owner=OWNER)).job.id
    await drain(engine)
    return job_id


async def test_a_decision_is_posted_once_then_updated_in_place_when_answered(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery
) -> None:
    job_id = await asked(engine)
    await deliver_all(delivery)
    [posted] = fake.calls_to("chat.postMessage", ok=True)
    ts = posted.response["ts"]
    [decision] = await engine.store.decisions.for_job(job_id)
    assert (decision.channel, decision.message_ts) == (CHANNEL, ts)
    buttons = [
        e for b in fake.message(CHANNEL, ts)["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert [b["value"] for b in buttons] == ["D-1:approve", "D-1:deny"]

    await engine.answer(decision.id, "approve", actor="U42")
    await deliver_all(delivery)
    await deliver_all(delivery)  # nothing is sent twice
    [update] = fake.calls_to("chat.update", ok=True)
    assert update.args["ts"] == ts
    shown = fake.message(CHANNEL, ts)
    assert "<@U42> answered *approve*" in str(shown["blocks"])
    assert all(b["type"] != "actions" for b in shown["blocks"])
    assert len(fake.calls_to("chat.postMessage")) == 1


async def test_an_update_never_overtakes_its_unsent_message(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery, frozen_clock: Any
) -> None:
    job_id = await asked(engine)
    [decision] = await engine.store.decisions.for_job(job_id)
    fake.fail("chat.postMessage", times=1, status=500)  # the sender's client does not retry a 5xx itself
    await delivery.deliver_due()
    await engine.answer(decision.id, "deny", actor="U42")  # answered (say, from the CLI) meanwhile
    await delivery.deliver_due()
    assert fake.calls_to("chat.update") == []
    opened, closed = await engine.store.outbox.all()
    assert (opened.kind, opened.state, opened.attempts) == ("decision.opened", "pending", 1)
    assert (closed.kind, closed.state, closed.attempts) == ("decision.closed", "pending", 0)
    frozen_clock.tick(60)
    await deliver_all(delivery)
    # Closed before it was ever shown: neither the stale question nor an update of nothing is posted.
    assert fake.calls_to("chat.postMessage", ok=True) == [] and fake.calls_to("chat.update") == []
    assert [item.response for item in await engine.store.outbox.all()] == [
        {"skipped": "closed before it was posted (answered)"},
        {"skipped": "the decision was never posted"},
    ]


async def test_a_rate_limit_storm_delivers_everything_exactly_once(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery
) -> None:
    for n in range(5):
        await engine.enqueue("demo.ask", {"question": f"Question {n}?"}, channel=CHANNEL)
    await drain(engine)
    fake.rate_limit("chat.postMessage", times=3, retry_after=1)
    await deliver_all(delivery)
    posted = fake.calls_to("chat.postMessage", ok=True)
    assert sorted(call.args["text"] for call in posted) == sorted(
        f"Q-{n} needs a decision: Question {n - 1}?" for n in range(1, 6)
    )
    assert len(fake.calls_to("chat.postMessage", ok=False)) == 3
    assert all(item.state == "sent" for item in await engine.store.outbox.all())


async def test_a_post_whose_answer_was_lost_is_found_in_the_channel_not_posted_again(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery, frozen_clock: Any
) -> None:
    job_id = await asked(engine)
    fake.lose_response("chat.postMessage", times=1)  # Slack posts it, the 503 hides that
    await delivery.deliver_due()
    assert len(fake.messages(CHANNEL)) == 1
    frozen_clock.tick(60)  # the row's backoff passes
    await deliver_all(delivery)
    [message] = fake.messages(CHANNEL)
    assert len(fake.calls_to("chat.postMessage")) == 1
    [history] = fake.calls_to("conversations.history", ok=True)
    [decision] = await engine.store.decisions.for_job(job_id)
    assert decision.message_ts == message["ts"] and history.response["messages"][0]["ts"] == message["ts"]
    [item] = await engine.store.outbox.all()
    assert (item.state, item.response) == ("sent", {"channel": CHANNEL, "ts": message["ts"]})


async def test_a_sender_that_died_before_settling_does_not_post_twice(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery, frozen_clock: Any
) -> None:
    await asked(engine)
    [leased] = await engine.store.outbox.lease_due()
    await delivery._send(leased)  # posted, then the process dies before mark_sent
    frozen_clock.tick(120)  # the dead sender's lease runs out
    await deliver_all(delivery)
    assert len(fake.messages(CHANNEL)) == 1 and len(fake.calls_to("chat.postMessage")) == 1
    assert [item.state for item in await engine.store.outbox.all()] == ["sent"]


async def test_owner_notes_and_escalations_arrive_by_dm(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery, frozen_clock: Any
) -> None:
    await engine.enqueue("demo.triage", {}, owner=OWNER)  # no ticket: pending, the owner is told
    await drain(engine, rules=False)
    frozen_clock.tick(121)  # demo.triage's SLA is 2 minutes
    await rules.climb_escalation_ladders(engine)
    await deliver_all(delivery)
    dm = fake.dm_channel(OWNER)
    texts = [message["text"] for message in fake.messages(dm)]
    assert any("is pending: a ticket id" in text for text in texts)
    assert any("past its SLA" in text for text in texts)
    [escalation] = [m for m in fake.messages(dm) if "past its SLA" in m["text"]]
    action_ids = [
        e["action_id"] for b in escalation["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert action_ids == ["acknowledge", "job_retry", "job_cancel"]


async def test_a_permanent_error_parks_the_row_without_retrying(
    engine: Engine, fake: FakeSlack, delivery: OutboxDelivery
) -> None:
    await engine.enqueue("demo.ask", {"question": "Ship?"}, channel="C0NOSUCH99")
    await drain(engine)
    await deliver_all(delivery)
    [item] = await engine.store.outbox.all()
    assert (item.state, item.error) == ("failed", "channel_not_found")
    assert len(fake.calls_to("chat.postMessage")) == 1
