"""A person's whole day with `queuebot run` serving the fake Slack: create work by command, answer the agent's
decision, clear a review, acknowledge an overdue DM, and see it all on the Home tab and in /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest

from bot.engine import Engine
from bot.settings import Settings
from bot.slack_app import EVENTS_PATH
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from sandbox.workspace import Json
from store import clock
from store.schema import jobs
from store.states import JobState
from tests.helpers import free_port, running_bot, wait_for, wait_for_state

CHANNEL = "C0QUEUE001"
ME = "UOWNER0001"


@dataclass
class Day:
    engine: Engine
    fake: FakeSlack
    slack: SignedRequests
    base_url: str

    async def command(self, text: str) -> str:
        reply = await self.slack.send(self.slack.slash_command(ME, text, channel=CHANNEL))
        assert reply.status == 200, reply.text
        return reply.text

    async def message_saying(self, channel: str, words: str) -> Json:
        def found() -> bool:
            return any(words in str(m) for m in self.fake.messages(channel))

        await self.fake.wait_for(found, timeout=10)
        return next(m for m in self.fake.messages(channel) if words in str(m))

    async def click(self, action_id: str, channel: str, ts: str) -> None:
        click = self.slack.block_actions(ME, action_id, channel=channel, message_ts=ts)
        assert (await self.slack.send(click)).status == 200


@pytest.fixture
async def day(engine: Engine) -> AsyncIterator[Day]:
    async with FakeSlack() as fake:
        settings = Settings(
            slack_bot_token=fake.token,
            slack_signing_secret=fake.signing_secret,
            slack_api_url=fake.api_url,
            port=free_port(),
        )
        async with (
            running_bot(engine, settings) as base_url,
            SignedRequests(fake, base_url + EVENTS_PATH) as slack,
        ):
            yield Day(engine, fake, slack, base_url)


async def test_a_persons_whole_day_works_in_slack(day: Day) -> None:
    engine, fake = day.engine, day.fake

    # Morning: work created by command lands in the channel it was typed in, and the agent asks.
    created = await day.command('add demo.ask question="Refund order 1234?"')
    assert created.startswith("Created Q-1")
    question = await day.message_saying(CHANNEL, "Refund order 1234?")
    await day.click("answer:approve", CHANNEL, question["ts"])

    # The agent resumes with the answer and finishes; the message now says who answered, with no buttons.
    assert (await wait_for_state(engine, 1, JobState.COMPLETED)).result == "approve"
    await fake.wait_for(
        lambda: "answered *approve*" in str(fake.message(CHANNEL, question["ts"])), timeout=10
    )
    assert "actions" not in [b["type"] for b in fake.message(CHANNEL, question["ts"])["blocks"]]

    # A draft to review: approved from its message.
    assert (await day.command('add demo.review text="Dear customer, your refund is on its way."')).startswith(
        "Created Q-2"
    )
    review = await day.message_saying(CHANNEL, "your refund is on its way")
    await day.click("answer:approve", CHANNEL, review["ts"])
    await wait_for_state(engine, 2, JobState.COMPLETED)

    # Afternoon: a ticket with nothing to go on waits on its owner, goes past its SLA, and the scheduler
    # sends the owner a DM; Acknowledge stops the ladder.
    await day.command("add demo.triage")
    await wait_for_state(engine, 3, JobState.PENDING)
    past = clock.now() - timedelta(seconds=5)
    async with engine.store.db.write() as conn:  # set-up: the SLA passed a moment ago
        await conn.execute(jobs.update().where(jobs.c.id == 3).values(sla_at=past, sla_next_at=past))
    dm = fake.dm_channel(ME)
    escalation = await day.message_saying(dm, "past its SLA")
    await day.click("acknowledge", dm, escalation["ts"])

    async def acknowledged() -> bool:
        return (await engine.store.jobs.get(3)).acknowledged_by == ME

    await wait_for(acknowledged)

    # Evening: the Home tab shows the day — two done, one pending on me — and /metrics agrees.
    assert (await day.slack.send(day.slack.app_home_opened(ME))).status == 200
    await fake.wait_for(lambda: fake.home_view(ME) is not None, timeout=10)
    home = str(fake.home_view(ME))
    assert "*completed* 2" in home and "*pending* 1" in home
    assert "*Q-3* `demo.triage` is pending" in home
    async with aiohttp.ClientSession() as http, http.get(f"{day.base_url}/metrics") as scraped:
        metrics = await scraped.text()
    assert 'queuebot_jobs{lane="fast",state="completed"} 2.0' in metrics
    assert 'queuebot_decision_wait_seconds_count{source="human"}' in metrics
    assert 'queuebot_failures_total{failure_class="missing_input",type="demo.triage"}' in metrics
