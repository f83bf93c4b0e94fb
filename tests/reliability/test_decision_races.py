"""Scenario 4, decision races: fifty permitted people click at once over signed HTTP while the decision's
timeout fires. Exactly one outcome is recorded, the message is updated once, and everyone else is told who
answered what."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import job_type
from scheduler import rules
from store import clock
from store.models import AnswererPolicy
from store.schema import decisions
from store.states import DecisionState, JobState
from tests.helpers import drain
from tests.reliability.conftest import CHANNEL, OWNER, Workspace

pytestmark = pytest.mark.reliability

CLICKS = 50
#: When the timeout fires, counted from the first click's send: from before any click lands to among them.
TIMEOUT_DELAYS_S = (0.0, 0.06, 0.12, 0.25)
PEOPLE = ["UOWNER0001", "UADMIN0001", "UREVIEW001", "UGUEST0001"]


class Empty(BaseModel):
    pass


async def test_fifty_clicks_and_a_timeout_at_once_make_one_outcome_one_update_and_all_told(
    engine: Engine, workspace: Workspace
) -> None:
    @job_type(
        "test.raced", input=Empty, lane="fast", answerers=AnswererPolicy(anyone=True), into=engine.types
    )
    async def raced(ctx: JobContext, data: Empty) -> str:
        return (await ctx.ask("go", "Go?", ["yes", "no"], default="no", timeout="1m")).value

    winners = []
    for delay_s in TIMEOUT_DELAYS_S:
        job_id = (await engine.enqueue("test.raced", {}, channel=CHANNEL, owner=OWNER)).job.id
        await drain(engine)
        await workspace.deliver()
        [decision] = await engine.store.decisions.for_job(job_id)
        assert decision.message_ts is not None
        async with engine.store.db.write() as conn:  # test set-up: the minute has passed
            past = clock.now() - timedelta(seconds=1)
            await conn.execute(
                decisions.update().where(decisions.c.id == decision.id).values(timeout_at=past)
            )
        clicks = [
            workspace.slack.block_actions(
                PEOPLE[n % len(PEOPLE)],
                f"answer:{'yes' if n % 2 else 'no'}",
                channel=CHANNEL,
                message_ts=decision.message_ts,
            )
            for n in range(CLICKS)
        ]

        async def timeout_fires(delay_s: float = delay_s) -> int:
            await asyncio.sleep(delay_s)
            return await rules.time_out_decisions(engine)

        sent = await asyncio.gather(timeout_fires(), *(workspace.slack.send(click) for click in clicks))
        assert {delivery.status for delivery in sent[1:]} == {200}

        closed = await engine.store.decisions.get(decision.id)
        assert closed.state is DecisionState.ANSWERED
        # Everyone is told who won, but for the winner's own repeats of the winning click (nothing to tell).
        told = sum(
            1
            for c in clicks
            if (c.payload["user"]["id"], c.payload["actions"][0]["value"].split(":")[1])
            != (closed.answered_by, closed.answer)
        )
        if closed.answered_by != "timeout":
            assert told < CLICKS

        def replies(clicks: list[Any] = clicks) -> list[str]:
            return [
                post["text"] for c in clicks for post in workspace.fake.response_posts(c.response_url or "")
            ]

        await workspace.fake.wait_for(lambda told=told: len(replies()) >= told, timeout=20)
        expected = f"{decision.ref} was already answered by {closed.answered_by} with {closed.answer}"
        assert replies() == [expected] * told
        trail = await engine.store.jobs.events(job_id)
        outcomes = [e for e in trail if e.kind in ("decision_answered", "decision_expired")]
        assert [(e.actor, e.details) for e in outcomes] == [
            (closed.answered_by, {"answer": closed.answer, "source": closed.answer_source})
        ]
        assert [e.kind for e in trail].count("resumed") == 1
        assert (await engine.store.jobs.get(job_id)).state is JobState.READY

        before = len(workspace.fake.calls_to("chat.update", ok=True))
        await workspace.deliver()
        await workspace.deliver()
        updates = workspace.fake.calls_to("chat.update", ok=True)[before:]
        assert [u.args["ts"] for u in updates] == [decision.message_ts]
        assert closed.answer is not None and f"*{closed.answer}*" in str(updates[0].args["blocks"])
        await drain(engine)
        assert (await engine.store.jobs.get(job_id)).result == closed.answer
        winners.append(closed.answered_by)

    print(
        f"\n[decision races] {engine.store.db.dialect}: {len(TIMEOUT_DELAYS_S)} rounds of {CLICKS} clicks "
        f"and a timeout; winners {winners}"
    )
