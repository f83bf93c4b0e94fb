"""The in-process worker: one claim loop per lane with its own slots, batched heartbeats, and run endings
written in batches (a group commit) so throughput grows with load."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy.exc

from bot import endings, instruments
from bot.context import JobContext
from bot.engine import Engine
from bot.outcomes import DecisionPending, JobStopped
from bot.wakeup import wait_any
from store import clock
from store.errors import UnknownJobType
from store.models import Job, RunEnd
from store.states import FailureClass, JobState

log = logging.getLogger("queuebot.worker")

#: Failures worth waiting out: the connection, not what was written.
TRANSIENT_DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)
#: SQLSTATE classes of a server going away rather than refusing what was written: connection exceptions
#: (08) and operator intervention (57: connection terminated, server shutting down or starting up).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "57"})


def is_transient_database_error(exc: BaseException) -> bool:
    """The connection failed (the database may be restarting), as opposed to the database refusing what
    was written. PostgreSQL's shutdown errors come through SQLAlchemy as plain DBAPIErrors."""
    if isinstance(exc, TRANSIENT_DATABASE_ERRORS):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        return exc.connection_invalidated or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    return False


#: Most run endings written in one transaction.
MAX_FINISH_BATCH = 500
#: Tries to write a batch of run endings before giving up on it (backing off between tries).
FINISH_ATTEMPTS = 5


@dataclass
class _Run:
    job: Job
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    stopped: bool = False
    #: the handler has returned and its end is being written: the slot is free for the next job already
    finishing: bool = False


@dataclass
class _Finisher:
    """Collects run endings and writes them together; each caller waits for its own batch."""

    engine: Engine
    pending: list[tuple[RunEnd, asyncio.Future[bool]]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(self, end: RunEnd) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((end, future))
        self.wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_FINISH_BATCH], self.pending[MAX_FINISH_BATCH:]
                await self._write(batch)

    async def _write(self, batch: list[tuple[RunEnd, asyncio.Future[bool]]]) -> None:
        done = await self._finish_with_retries([end for end, _ in batch])
        if done is None:
            # One bad ending must not hold back the rest: write them one by one, and an ending the database
            # will not take (say, a result it cannot store) becomes a dead job saying why.
            done = set()
            for end, _ in batch:
                alone = await self._finish_with_retries([end])
                if alone is None:
                    alone = await self._finish_with_retries([endings.unstorable(end)])
                done |= alone or set()
        for lane in {
            child.lane for end, _ in batch if end.job_id in (done or set()) for child in end.children
        }:
            self.engine.wakeup.notify(lane)
        for end, future in batch:
            if not future.done():
                future.set_result(end.job_id in (done or set()))

    async def _finish_with_retries(self, ends: list[RunEnd]) -> set[int] | None:
        """The job ids recorded; None when the database refused what was written; none recorded when it
        stayed unreachable through every try (the jobs stay running and the reaper hands them out again)."""
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                return await self.engine.store.claims.finish(ends)
            except Exception as exc:
                if not is_transient_database_error(exc):  # refused: retrying will not help
                    log.warning("event=finish_refused jobs=%d error=%s", len(ends), exc)
                    return None
                log.warning("event=finish_failed attempt=%d jobs=%d error=%s", attempt, len(ends), exc)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))  # the database may be restarting
        return set()


class _LaneHandOff:
    """This worker's standing offer to run a job enqueued in this process on `lane` whenever it has a free
    slot: the enqueue writes the job already claimed by it (bot.wakeup.HandOff). The store hands over only
    a job nothing waits ahead of, so the lane's order holds."""

    def __init__(self, worker: Worker, lane: str) -> None:
        self.worker = worker
        self.lane = lane
        self.worker_id = worker.worker_id

    def reserve(self) -> bool:
        worker = self.worker
        if worker._stopping.is_set() or worker.running_in(self.lane) >= worker.lanes[self.lane]:
            return False
        worker._reserved[self.lane] += 1
        return True

    def start(self, job: Job) -> None:
        worker = self.worker
        worker._reserved[self.lane] -= 1
        if not worker._stopping.is_set():
            worker._start(job)
            return
        # The worker stopped while the enqueue was writing: hand the job back at once (no attempt spent).
        ending = endings.abandoned(job, worker.worker_id, "worker shut down")
        task = asyncio.create_task(worker.engine.store.claims.finish([ending]))
        worker._background.add(task)
        task.add_done_callback(worker._background.discard)

    def release(self) -> None:
        self.worker._reserved[self.lane] -= 1
        self.worker._lane_free[self.lane].set()


class Worker:
    """Runs jobs of every configured lane in this process until stopped (or idle, if asked)."""

    def __init__(self, engine: Engine, *, worker_id: str | None = None) -> None:
        self.engine = engine
        self.config = engine.config.worker
        self.lanes = dict(engine.config.lanes)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.runs: dict[int, _Run] = {}
        self._lane_free: dict[str, asyncio.Event] = {lane: asyncio.Event() for lane in self.lanes}
        self._finisher = _Finisher(engine)
        self._stopping = asyncio.Event()
        #: slots held for jobs an enqueue of this process is handing over (see _LaneHandOff)
        self._reserved: dict[str, int] = dict.fromkeys(self.lanes, 0)
        self._background: set[asyncio.Task[object]] = set()
        self.completed_runs = 0

    def running_in(self, lane: str) -> int:
        running = sum(1 for run in self.runs.values() if run.job.lane == lane and not run.finishing)
        return running + self._reserved.get(lane, 0)

    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> None:
        """Claim and run jobs until `stop` is set, or until the queue is idle when `until_idle`."""
        tasks = [
            asyncio.create_task(self._finisher.run(), name="finisher"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeats"),
        ]
        tasks += [
            asyncio.create_task(self._lane_loop(lane, slots), name=f"lane:{lane}")
            for lane, slots in self.lanes.items()
        ]
        waiter = asyncio.create_task(self._wait_for_end(until_idle, stop))
        offers = [(lane, _LaneHandOff(self, lane)) for lane in self.lanes]
        for lane, offer in offers:
            self.engine.wakeup.offer(lane, offer)
        try:
            await waiter
        finally:
            for lane, offer in offers:
                self.engine.wakeup.withdraw(lane, offer)
            self._stopping.set()
            await self._release_runs()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_for_end(self, until_idle: bool, stop: asyncio.Event | None) -> None:
        while True:
            if stop is not None and stop.is_set():
                return
            if until_idle and not self.runs and await self._queue_idle():
                return
            if stop is None:
                await asyncio.sleep(self.config.poll_interval_s)
            else:
                await wait_any(stop, timeout_s=self.config.poll_interval_s)

    async def _queue_idle(self) -> bool:
        """Idle: nothing ready or running anywhere, and no retry due within the idle horizon."""
        next_at = await self.engine.store.scans.next_busy_at()
        if next_at is None:
            return True
        return (next_at - clock.now()).total_seconds() > self.config.idle_horizon_s

    async def _lane_loop(self, lane: str, slots: int) -> None:
        wake = self.engine.wakeup.event(lane)
        free = self._lane_free[lane]
        while not self._stopping.is_set():
            room = slots - self.running_in(lane)
            claimed: list[Job] = []
            if room > 0:
                wake.clear()
                await self.engine.wakeup.foreground.wait_quiet()  # people first (bot.wakeup.Foreground)
                room = slots - self.running_in(lane)
                try:
                    claimed = await self.engine.store.claims.claim(lane, room, worker=self.worker_id)
                except Exception as exc:  # a database hiccup: back off and claim again
                    log.warning("event=claim_failed lane=%s error=%s", lane, exc)
                    await asyncio.sleep(self.config.poll_interval_s)
                    continue
                for job in claimed:
                    self._start(job)
            if slots - self.running_in(lane) <= 0:
                free.clear()
                await free.wait()  # full: wait for a slot before claiming again
            elif len(claimed) < room:
                # The lane's ready backlog is drained: a freed slot alone will find nothing, so claim again
                # only when new work is announced (enqueue, retry, answer, NOTIFY) or at the next poll.
                await wait_any(wake, timeout_s=self.config.poll_interval_s)

    def _start(self, job: Job) -> None:
        instruments.job_claimed(job)
        run = _Run(job=job)
        run.task = asyncio.create_task(self._execute(run), name=job.ref)
        self.runs[job.id] = run

    async def _execute(self, run: _Run) -> None:
        job = run.job
        started = time.monotonic()
        try:
            end = await self._run_handler(run)
            # Claim the next job while this ending waits for its group commit, not after it.
            run.finishing = True
            self._lane_free[job.lane].set()
            if end is not None and not run.stopped:
                instruments.run_ended(job, end, time.monotonic() - started)
                recorded = await self._finisher.submit(end)
                log.info("event=run_ended job=%s state=%s recorded=%s", job.ref, end.to_state, recorded)
                self.completed_runs += 1
        except asyncio.CancelledError:
            if not run.stopped and not self._stopping.is_set():
                raise
        finally:
            self.runs.pop(job.id, None)
            self._lane_free[job.lane].set()

    async def _run_handler(self, run: _Run) -> RunEnd | None:
        job = run.job
        try:
            job_type = self.engine.types.get(job.type)
        except UnknownJobType as exc:
            return RunEnd(
                job_id=job.id,
                run_seq=job.run_seq,
                actor=self.worker_id,
                to_state=JobState.DEAD,
                event_kind="unknown_type",
                reason=str(exc),
                failure_class=FailureClass.FATAL,
            )
        decisions = await self.engine.store.decisions.for_job(job.id) if job.run_seq > 1 else []
        ctx = JobContext(self.engine, job_type, job, decisions, self.worker_id)
        run.ctx = ctx
        try:
            data = job_type.input.model_validate(job.input)
            returned = await job_type.handler(ctx, data)
            return endings.completed(ctx, returned)
        except DecisionPending as pending:
            return endings.waiting(ctx, pending.spec)
        except JobStopped:
            run.stopped = True
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("event=run_failed job=%s error=%s", job.ref, exc)
            return endings.failed(ctx, exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            runs = [(run.job.id, run.job.run_seq) for run in self.runs.values()]
            if not runs:
                continue
            try:
                alive = await self.engine.store.claims.heartbeat(runs, worker=self.worker_id)
            except Exception as exc:  # missed beats are fine until the heartbeat timeout
                log.warning("event=heartbeat_failed error=%s", exc)
                continue
            for job_id, _ in runs:
                if job_id not in alive:
                    self._stop_run(job_id)

    def _stop_run(self, job_id: int) -> None:
        """The job was taken away (cancelled, paused, expired, reaped): stop its run cooperatively."""
        run = self.runs.get(job_id)
        if run is None or run.task is None or run.task.done() or run.finishing:
            return
        run.stopped = True
        if run.ctx is not None:
            run.ctx.stopped = True
        log.info("event=run_stopped job=%s", run.job.ref)
        run.task.cancel()

    async def _release_runs(self) -> None:
        """On shutdown, hand running jobs back (no attempt spent) instead of waiting for the reaper."""
        runs = list(self.runs.values())
        tasks = [run.task for run in runs if run.task is not None]
        for run in runs:
            run.stopped = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runs:
            with contextlib.suppress(Exception):
                await self.engine.store.claims.finish(
                    [endings.abandoned(run.job, self.worker_id, "worker shut down") for run in runs]
                )
