"""An enqueue in a process whose worker has a free slot on the job's lane hands the job over already claimed
(PostgreSQL: one statement instead of an enqueue and a claim), recorded like any claim; it never jumps a
lane's waiting work, a pause or a job's own start time. SQLite leaves the job ready for the worker's claim."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from bot.engine import Engine
from bot.runtime import Worker
from store import clock
from store.models import Job, NewJob
from store.states import JobState
from tests.helpers import wait_for_state


@dataclass
class Offer:
    """A worker's hand-off offer, as bot.wakeup.HandOff, that records what it is given."""

    worker_id: str = "w-here"
    reserved: int = 0
    started: list[Job] = field(default_factory=list)
    released: int = 0

    def reserve(self) -> bool:
        self.reserved += 1
        return True

    def start(self, job: Job) -> None:
        self.started.append(job)

    def release(self) -> None:
        self.released += 1


async def test_a_job_enqueued_beside_an_idle_worker_runs_with_a_trail_like_any_claim(engine: Engine) -> None:
    worker = Worker(engine, worker_id="w-here")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop=stop))
    await asyncio.sleep(0)  # one turn of the loop: run() has started and made its offers
    try:
        job = (await engine.enqueue("demo.echo", {"text": "hi"}, actor="UOWNER0001")).job
        if engine.store.db.is_postgres:
            assert (job.state, job.claimed_by, job.run_seq) == (JobState.RUNNING, "w-here", 1)
        else:
            assert job.state is JobState.READY
        done = await wait_for_state(engine, job.id, JobState.COMPLETED)
    finally:
        stop.set()
        await running
    assert done.result == "hi"
    trail = [(e.kind, e.from_state, e.to_state) for e in await engine.store.jobs.events(job.id)]
    assert trail[:2] == [("enqueued", None, JobState.READY), ("claimed", JobState.READY, JobState.RUNNING)]


async def test_the_offer_gets_the_job_when_nothing_waits_ahead_of_it(engine: Engine) -> None:
    offer = Offer()
    engine.wakeup.offer("fast", offer)
    job = (await engine.enqueue("demo.echo", {"text": "hi"}, actor="UOWNER0001")).job
    if engine.store.db.is_postgres:
        assert [started.id for started in offer.started] == [job.id] and offer.released == 0
        assert (job.state, job.claimed_by) == (JobState.RUNNING, "w-here")
    else:
        assert offer.started == [] and offer.released == 1 and job.state is JobState.READY


async def test_no_hand_over_past_waiting_work_into_a_pause_or_before_a_job_is_due(engine: Engine) -> None:
    offer = Offer()
    engine.wakeup.offer("fast", offer)
    await engine.store.jobs.enqueue(
        [NewJob(type="demo.echo", lane="fast", input={"text": "first"})], actor="t"
    )
    behind = (await engine.enqueue("demo.echo", {"text": "second"}, actor="UOWNER0001")).job
    assert behind.state is JobState.READY  # the job already waiting goes first

    await engine.pause("demo.echo", actor="UADMIN0001")
    held = (await engine.enqueue("demo.echo", {"text": "held"}, actor="UOWNER0001")).job
    assert held.state is JobState.PAUSED
    await engine.resume("demo.echo", actor="UADMIN0001")

    later = engine.new_job("demo.echo", {"text": "later"}).model_copy(
        update={"run_after": clock.now() + timedelta(hours=1)}
    )
    reserved = offer.reserved
    [not_yet] = await engine.enqueue_many([later], actor="UOWNER0001")
    assert not_yet.job.state is JobState.READY and offer.reserved == reserved  # not even offered
    assert offer.started == [] and offer.released == offer.reserved
