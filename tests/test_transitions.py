"""Every transition the table allows succeeds with its event; every other one is refused and changes
nothing."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from store import Store
from store.errors import InvalidTransition, JobNotFound
from store.models import NewJob
from store.schema import jobs
from store.states import TERMINAL_STATES, TRANSITIONS, JobState, sources_of


async def force_state(store: Store, job_id: int, state: JobState) -> None:
    """Test set-up only: put a job in a state without going through the table."""
    async with store.db.write() as conn:
        await conn.execute(jobs.update().where(jobs.c.id == job_id).values(state=state.value))


async def new_job(store: Store) -> int:
    [enqueued] = await store.jobs.enqueue(
        [NewJob(type="demo.echo", lane="fast", input={"text": "x"})], actor="test"
    )
    return enqueued.job.id


def test_table_covers_every_state_and_terminal_states_only_go_back_to_ready() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] <= {JobState.READY}
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert sources_of(JobState.RUNNING) == {JobState.READY}


async def test_each_allowed_transition_succeeds_and_each_forbidden_one_is_refused(store: Store) -> None:
    job_id = await new_job(store)
    for source, target in itertools.product(JobState, JobState):
        await force_state(store, job_id, source)
        events_before = len(await store.jobs.events(job_id))
        if target in TRANSITIONS[source]:
            moved = await store.jobs.move(job_id, target, actor="test", reason="because")
            assert moved.state is target, (source, target)
            last = (await store.jobs.events(job_id))[-1]
            assert (last.from_state, last.to_state, last.actor, last.reason) == (
                source,
                target,
                "test",
                "because",
            )
            assert (moved.finished_at is not None) == (target in TERMINAL_STATES)
        else:
            with pytest.raises(InvalidTransition) as refused:
                await store.jobs.move(job_id, target, actor="test")
            assert refused.value.current == source.value, (source, target)
            assert (await store.jobs.get(job_id)).state is source
            assert len(await store.jobs.events(job_id)) == events_before


async def test_from_states_narrows_what_the_table_allows(store: Store) -> None:
    job_id = await new_job(store)
    await force_state(store, job_id, JobState.RUNNING)
    with pytest.raises(InvalidTransition, match="Q-1 is running; it cannot become ready"):
        await store.jobs.move(job_id, JobState.READY, actor="test", from_states=[JobState.DEAD])


async def test_a_transition_of_a_missing_job_names_it(store: Store) -> None:
    with pytest.raises(JobNotFound, match="no job Q-404"):
        await store.jobs.move(404, JobState.CANCELLED, actor="test")


async def test_a_stale_run_cannot_finish_a_job_claimed_again(store: Store) -> None:
    job_id = await new_job(store)
    [first] = await store.claims.claim("fast", 1, worker="w1")
    await store.jobs.move(job_id, JobState.READY, actor="reaper", from_states=[JobState.RUNNING])
    [second] = await store.claims.claim("fast", 1, worker="w2")
    assert second.run_seq == first.run_seq + 1
    from store.models import RunEnd

    stale = RunEnd(
        job_id=job_id,
        run_seq=first.run_seq,
        to_state=JobState.COMPLETED,
        actor="w1",
        event_kind="completed",
        result="stale",
    )
    assert await store.claims.finish([stale]) == set()
    assert (await store.jobs.get(job_id)).state is JobState.RUNNING
    fresh = stale.model_copy(update={"run_seq": second.run_seq, "result": "fresh"})
    assert await store.claims.finish([fresh]) == {job_id}
    job = await store.jobs.get(job_id)
    assert (job.state, job.result) == (JobState.COMPLETED, "fresh")


async def test_schema_written_by_migrations_matches_the_tables_in_code(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from store.schema import metadata

    def diff(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync_conn)
        return [d for d in compare_metadata(context, metadata) if not _type_only(d)]

    async with store.db.read() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


def _type_only(difference: object) -> bool:
    """Our UtcDateTime is DateTime in the migration; alembic reports that as a type change."""
    return isinstance(difference, list) and all(item[0] == "modify_type" for item in difference)
