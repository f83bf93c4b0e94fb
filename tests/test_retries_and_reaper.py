"""Transient failures back off exponentially with jitter, then die; orphans are reaped; rate limits cool
a lane down without spending attempts. Time is frozen and moved by hand."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, Retry, job_type
from bot.outcomes import RateLimited, TransientError
from bot.runtime import Worker
from bot.settings import Config, WorkerConfig
from scheduler import rules
from store import clock
from store.states import FailureClass, JobState
from tests.conftest import fast_config


class Empty(BaseModel):
    pass


@pytest.fixture
def config() -> Config:
    """Workers stop as soon as nothing is ready now: the frozen clock decides what is due."""
    return fast_config(
        worker=WorkerConfig(
            poll_interval_s=0.05, heartbeat_interval_s=0.1, heartbeat_timeout_s=5, idle_horizon_s=0
        )
    )


def test_backoff_doubles_up_to_the_cap_within_the_jitter() -> None:
    retry = Retry(base_delay_s=2.0, max_delay_s=30.0, jitter=0.2)
    rng = random.Random(7)
    for failures, base in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0)]:
        delay = retry.delay_s(failures, rng)
        assert base * 0.8 <= delay <= min(30.0, base * 1.2), (failures, delay)
    assert Retry(base_delay_s=1.0, jitter=0.0).delay_s(3) == 4.0


@pytest.fixture
def always_failing(types: Registry) -> list[int]:
    runs: list[int] = []

    @job_type(
        "test.fails",
        input=Empty,
        lane="fast",
        into=types,
        retry=Retry(max_attempts=3, base_delay_s=10.0, jitter=0.0),
    )
    async def fails(ctx: JobContext, data: Empty) -> None:
        runs.append(ctx.attempt)
        raise TransientError(f"boom {ctx.attempt}")

    return runs


async def run_ready(engine: Engine) -> None:
    """Run whatever is ready now (the frozen clock decides what is due)."""
    await Worker(engine).run(until_idle=True)


async def test_transient_failures_back_off_then_die_when_out_of_attempts(
    engine: Engine, frozen_clock: Any, always_failing: list[int]
) -> None:
    job_id = (await engine.enqueue("test.fails", {})).job.id
    start = clock.now()
    await run_ready(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts, job.reason) == (JobState.RETRY_SCHEDULED, 1, "boom 1")
    assert job.run_after == start + timedelta(seconds=10)
    assert await engine.store.scans.promote_due_retries() == 0  # not due yet

    frozen_clock.tick(10)
    assert await engine.store.scans.promote_due_retries() == 1
    await run_ready(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts) == (JobState.RETRY_SCHEDULED, 2)
    assert job.run_after == clock.now() + timedelta(seconds=20)  # doubled

    frozen_clock.tick(20)
    await rules.promote_due_retries(engine)
    await run_ready(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts, job.failure_class) == (JobState.DEAD, 3, FailureClass.TRANSIENT)
    assert always_failing == [1, 2, 3]
    assert [e.kind for e in await engine.store.jobs.events(job_id)][-1] == "retries_exhausted"


async def test_a_dead_job_retried_by_a_person_gets_fresh_attempts(
    engine: Engine, frozen_clock: Any, always_failing: list[int]
) -> None:
    job_id = (await engine.enqueue("test.fails", {})).job.id
    for _ in range(3):
        await run_ready(engine)
        frozen_clock.tick(60)
        await engine.store.scans.promote_due_retries()
    assert (await engine.store.jobs.get(job_id)).state is JobState.DEAD
    job = await engine.retry(f"Q-{job_id}", actor="cli")
    assert (job.state, job.attempts) == (JobState.READY, 0)


async def test_orphans_are_reaped_back_to_ready_and_dead_when_out_of_attempts(
    engine: Engine, frozen_clock: Any
) -> None:
    job_id = (await engine.enqueue("demo.echo", {"text": "x"})).job.id
    await engine.store.claims.claim("fast", 1, worker="crashed-worker")
    timeout_s = engine.config.worker.heartbeat_timeout_s
    frozen_clock.tick(timeout_s - 1)
    assert await rules.reap_orphaned_jobs(engine) == 0  # still within its heartbeat timeout
    frozen_clock.tick(2)
    assert await rules.reap_orphaned_jobs(engine) == 1
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts) == (JobState.READY, 1)
    assert "crashed-worker stopped heartbeating" in (job.reason or "")
    await run_ready(engine)
    assert (await engine.store.jobs.get(job_id)).state is JobState.COMPLETED

    last = (await engine.enqueue("demo.echo", {"text": "y"})).job
    for _ in range(last.max_attempts):
        await engine.store.claims.claim("fast", 1, worker="crashed-worker")
        frozen_clock.tick(timeout_s + 1)
        await rules.reap_orphaned_jobs(engine)
    job = await engine.store.jobs.get(last.id)
    assert (job.state, job.attempts) == (JobState.DEAD, job.max_attempts)


async def test_a_heartbeating_run_is_not_reaped(engine: Engine, frozen_clock: Any) -> None:
    await engine.enqueue("demo.echo", {"text": "x"})
    [job] = await engine.store.claims.claim("fast", 1, worker="w")
    frozen_clock.tick(engine.config.worker.heartbeat_timeout_s - 1)
    assert await engine.store.claims.heartbeat([(job.id, job.run_seq)], worker="w") == {job.id}
    frozen_clock.tick(2)
    assert await rules.reap_orphaned_jobs(engine) == 0


async def test_rate_limit_cools_the_lane_and_spends_no_attempt(
    engine: Engine, types: Registry, frozen_clock: Any
) -> None:
    calls: list[int] = []

    @job_type("test.limited", input=Empty, lane="fast", into=types)
    async def limited(ctx: JobContext, data: Empty) -> str:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise RateLimited(30)
        return "through"

    job_id = (await engine.enqueue("test.limited", {})).job.id
    other = (await engine.enqueue("demo.echo", {"text": "waits too"})).job.id
    await engine.pause("demo.echo", actor="cli")  # so the first run is the limited one
    await run_ready(engine)
    await engine.resume("demo.echo", actor="cli")
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts) == (JobState.READY, 0)
    assert job.run_after == clock.now() + timedelta(seconds=30)
    assert await engine.store.claims.claim("fast", 5, worker="w") == []  # the whole lane cools down
    assert (await engine.store.jobs.get(other)).state is JobState.READY
    frozen_clock.tick(31)
    await run_ready(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.result, job.attempts) == (JobState.COMPLETED, "through", 0)
    assert (await engine.store.jobs.get(other)).state is JobState.COMPLETED
