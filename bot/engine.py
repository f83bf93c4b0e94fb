"""The engine's front door: what the CLI, Slack handlers, the scheduler and job contexts call. It checks
types, inputs and authority, then acts through the store."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bot import instruments
from bot.authority import Authority
from bot.jobtypes import JobType, Registry, registry
from bot.ladders import reached_by
from bot.settings import Config
from bot.wakeup import HandOff, Wakeup
from store import Store, clock
from store.controls import Pause, PauseScope
from store.decisions import Answered
from store.errors import InvalidInput, NotPermitted, QueuebotError
from store.jobs import BoardStats, Enqueued
from store.models import Decision, Event, Job, NewJob
from store.states import OPEN_STATES, DecisionState, JobState, Priority

log = logging.getLogger("queuebot.engine")

_JOB_REF = re.compile(r"^\s*(?:[Qq]-)?(\d+)\s*$")
_DECISION_REF = re.compile(r"^\s*(?:[Dd]-)?(\d+)\s*$")
#: States from which a person may re-queue a job.
RETRYABLE_STATES = (
    JobState.DEAD,
    JobState.EXPIRED,
    JobState.CANCELLED,
    JobState.BLOCKED,
    JobState.ESCALATED,
    JobState.RETRY_SCHEDULED,
    JobState.PENDING,
)


def parse_job_ref(text: str) -> int:
    match = _JOB_REF.match(text)
    if not match:
        raise QueuebotError(f"{text!r} is not a job id (expected Q-<number>)")
    return int(match.group(1))


def parse_decision_ref(text: str) -> int:
    match = _DECISION_REF.match(text)
    if not match:
        raise QueuebotError(f"{text!r} is not a decision id (expected D-<number>)")
    return int(match.group(1))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def refuse_nul(what: str, *texts: Any) -> None:
    """InvalidInput when text a person or an agent gave holds a NUL character: PostgreSQL cannot store one
    in text or JSON, so it is refused on SQLite too and both databases behave alike."""
    if any(_has_nul(text) for text in texts):
        raise InvalidInput(f"{what} may not contain NUL characters (\\u0000)")


def describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "input"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class JobView(BaseModel):
    """A job with its evidence trail and decisions, for `show`."""

    model_config = ConfigDict(frozen=True)

    job: Job
    events: list[Event]
    decisions: list[Decision]


class StatusView(BaseModel):
    model_config = ConfigDict(frozen=True)

    stats: BoardStats
    pauses: list[Pause]
    cooldowns: dict[str, str]
    spend_today: dict[str, float]


class Engine:
    def __init__(
        self, store: Store, config: Config, *, types: Registry | None = None, wakeup: Wakeup | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.types = types or registry
        self.wakeup = wakeup or Wakeup()
        self.authority = Authority(config)

    # ---- creating work -------------------------------------------------------------------------------

    def new_job(
        self,
        type_name: str,
        input: dict[str, Any] | str,
        *,
        priority: Priority | str | None = None,
        key: str | None = None,
        owner: str | None = None,
        channel: str | None = None,
        parent_id: int | None = None,
    ) -> NewJob:
        """Validate a request for work against its type; raises UnknownJobType or InvalidInput."""
        job_type = self.types.get(type_name)
        data = self._validated_input(job_type, input)
        refuse_nul(f"input for {job_type.name}: text", data)
        refuse_nul("an idempotency key", key)
        try:
            chosen = Priority(priority) if priority is not None else job_type.priority
        except ValueError:
            raise InvalidInput(f"priority must be P0, P1 or P2, not {priority!r}") from None
        if job_type.lane not in self.config.lanes:
            raise InvalidInput(
                f"job type {type_name!r} uses lane {job_type.lane!r}, which queuebot.toml lacks"
            )
        now = clock.now()
        return NewJob(
            type=job_type.name,
            lane=job_type.lane,
            priority=chosen,
            input=data,
            owner=owner or job_type.owner or self.config.owners.get(job_type.name),
            channel=channel or job_type.channel or self.config.channels.get(job_type.name),
            idempotency_key=key or None,
            max_attempts=job_type.retry.max_attempts,
            sla_at=now + timedelta(seconds=job_type.sla_s) if job_type.sla_s is not None else None,
            deadline_at=now + timedelta(seconds=job_type.deadline_s)
            if job_type.deadline_s is not None
            else None,
            parent_id=parent_id,
        )

    @staticmethod
    def _validated_input(job_type: JobType, input: dict[str, Any] | str) -> dict[str, Any]:
        if isinstance(input, str):
            try:
                input = json.loads(input)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"input is not valid JSON: {exc.msg} at position {exc.pos}") from None
        if not isinstance(input, dict):
            raise InvalidInput(f"input for {job_type.name} must be a JSON object, not {type(input).__name__}")
        try:
            model = job_type.input.model_validate(input)
        except ValidationError as exc:
            raise InvalidInput(f"input for {job_type.name}: {describe_validation(exc)}") from None
        dumped: dict[str, Any] = model.model_dump(mode="json")
        return dumped

    async def enqueue(
        self, type_name: str, input: dict[str, Any] | str, *, actor: str = "cli", **options: Any
    ) -> Enqueued:
        """Validate and write one job (or find the one with the same idempotency key)."""
        [enqueued] = await self.enqueue_many([self.new_job(type_name, input, **options)], actor=actor)
        return enqueued

    async def enqueue_many(self, new_jobs: Sequence[NewJob], *, actor: str) -> list[Enqueued]:
        """Write validated jobs in one transaction; jobs of a paused scope start paused. A single job that
        may start at once goes straight to a worker of this process idle on its lane, if there is one: the
        enqueue writes it claimed, and the worker needs no claim of its own."""
        hand_off = self._hand_off_for(new_jobs)
        try:
            enqueued = await self.store.jobs.enqueue(
                new_jobs, actor=actor, claim_for=hand_off.worker_id if hand_off else None
            )
        except BaseException:
            if hand_off is not None:
                hand_off.release()
            raise
        if hand_off is not None:
            first = enqueued[0]
            if first.created and first.job.state is JobState.RUNNING:
                hand_off.start(first.job)
            else:
                hand_off.release()
        for lane in {item.job.lane for item in enqueued if item.created and item.job.state is JobState.READY}:
            self.wakeup.notify(lane)
        return enqueued

    def _hand_off_for(self, new_jobs: Sequence[NewJob]) -> HandOff | None:
        if len(new_jobs) != 1:
            return None
        [new] = new_jobs
        if new.state is not JobState.READY or (new.run_after is not None and new.run_after > clock.now()):
            return None
        return self.wakeup.take_offer(new.lane)

    # ---- people acting on work -----------------------------------------------------------------------

    async def answer(
        self, decision_ref: str | int, value: str, *, actor: str, comment: str | None = None
    ) -> Answered:
        """A person answers a decision; refused (and audited) if the answerer policy does not allow them."""
        refuse_nul("an answer", value, comment)
        decision = await self.answerable(decision_ref, actor=actor)
        answered = await self.store.decisions.answer(decision.id, value, actor=actor, comment=comment)
        if answered.decision.state is DecisionState.ANSWERED:
            instruments.decision_closed(answered.decision)
        if answered.job.state is JobState.READY:
            self.wakeup.notify(answered.job.lane)
        return answered

    async def answerable(self, decision_ref: str | int, *, actor: str) -> Decision:
        """The decision, if `actor` may answer it; NotPermitted (audited) if its policy leaves them out."""
        decision_id = decision_ref if isinstance(decision_ref, int) else parse_decision_ref(decision_ref)
        decision = await self.store.decisions.get(decision_id)
        job = await self.store.jobs.get(decision.job_id)
        if not self.authority.may_answer(actor, decision, job):
            await self._deny(job.id, actor, f"answer {decision.ref}")
            raise NotPermitted(
                f"{actor} may not answer {decision.ref}; it is for {self.authority.answerers_text(decision)}"
            )
        return decision

    async def _deny(self, job_id: int, actor: str, what: str) -> None:
        await self.store.jobs.add_event(job_id, actor=actor, kind="denied", reason=f"not permitted to {what}")

    async def _deny_scope(self, scope: PauseScope, name: str, actor: str, what: str) -> None:
        """Audit a refused pause or resume: in the job's trail, or in the log for `all`, a lane or a type
        (which have no trail of their own)."""
        if scope == "job":
            await self._deny(int(name), actor, what)
        else:
            log.warning("event=denied actor=%s action=%s scope=%s name=%s", actor, what, scope, name or "-")

    async def _operable(self, job_ref: str | int, actor: str, what: str) -> Job:
        job = await self.store.jobs.get(job_ref if isinstance(job_ref, int) else parse_job_ref(job_ref))
        if not self.authority.may_operate(actor, job):
            await self._deny(job.id, actor, what)
            raise NotPermitted(f"{actor} may not {what} {job.ref}; only its owner or an admin may")
        return job

    async def cancel(self, job_ref: str | int, *, actor: str, reason: str | None = None) -> Job:
        """Stop a job; a running one stops at its next heartbeat."""
        refuse_nul("a reason", reason)
        job = await self._operable(job_ref, actor, "cancel")
        return await self.store.jobs.move(
            job.id,
            JobState.CANCELLED,
            actor=actor,
            reason=reason or f"cancelled by {actor}",
            from_states=sorted(OPEN_STATES),
        )

    async def retry(self, job_ref: str | int, *, actor: str) -> Job:
        """Re-queue a dead, expired, cancelled, blocked, escalated or waiting job with fresh attempts."""
        job = await self._operable(job_ref, actor, "retry")
        moved = await self.store.jobs.move(
            job.id,
            JobState.READY,
            actor=actor,
            kind="requeued",
            from_states=RETRYABLE_STATES,
            values={"attempts": 0, "run_after": clock.now(), "failure_class": None, "result": None},
            reason=None,
        )
        self.wakeup.notify(moved.lane)
        return moved

    def pause_scope(self, target: str) -> tuple[PauseScope, str]:
        """`all`, a lane, a job type or a job id (Q-N)."""
        if target == "all":
            return "all", ""
        if target in self.config.lanes:
            return "lane", target
        if target in self.types:
            return "type", target
        if _JOB_REF.match(target) and target.upper().startswith("Q-"):
            return "job", str(parse_job_ref(target))
        lanes = ", ".join(sorted(self.config.lanes))
        raise QueuebotError(f"cannot pause {target!r}: name `all`, a lane ({lanes}), a job type or a job Q-N")

    async def pause(self, target: str, *, actor: str, reason: str | None = None) -> int:
        refuse_nul("a reason", reason)
        scope, name = self.pause_scope(target)
        if scope == "job":
            allowed = self.authority.may_operate(actor, await self.store.jobs.get(int(name)))
        else:
            allowed = self.authority.is_admin(actor) or not self.config.admins
        if not allowed:
            await self._deny_scope(scope, name, actor, "pause")
            raise NotPermitted(f"{actor} may not pause {target}; only admins (or a job's owner) may")
        return await self.store.controls.pause(scope, name, actor=actor, reason=reason)

    async def resume(self, target: str, *, actor: str) -> int:
        scope, name = self.pause_scope(target)
        if scope == "job":  # as with pause: a job's owner may resume their own job
            allowed = self.authority.may_operate(actor, await self.store.jobs.get(int(name)))
        else:
            allowed = self.authority.is_admin(actor) or not self.config.admins
        if not allowed:
            await self._deny_scope(scope, name, actor, "resume")
            raise NotPermitted(f"{actor} may not resume {target}; only admins (or a job's owner) may")
        resumed = await self.store.controls.resume(scope, name, actor=actor)
        self.wakeup.notify_all()
        return resumed

    async def acknowledge(self, job_ref: str | int, *, actor: str) -> Job:
        """Stop a job's escalation ladder: for its owner, admins and the people its ladder reaches."""
        job = await self.store.jobs.get(job_ref if isinstance(job_ref, int) else parse_job_ref(job_ref))
        if not (self.authority.may_operate(actor, job) or reached_by(self.config, job, actor)):
            await self._deny(job.id, actor, "acknowledge")
            raise NotPermitted(
                f"{actor} may not acknowledge {job.ref}; "
                "its owner, admins and the people its ladder reaches may"
            )
        return await self.store.jobs.acknowledge(job.id, actor=actor)

    # ---- looking -------------------------------------------------------------------------------------

    async def show(self, job_ref: str | int) -> JobView:
        job_id = job_ref if isinstance(job_ref, int) else parse_job_ref(job_ref)
        job = await self.store.jobs.get(job_id)
        return JobView(
            job=job,
            events=await self.store.jobs.events(job_id),
            decisions=await self.store.decisions.for_job(job_id),
        )

    async def status(self) -> StatusView:
        return StatusView(
            stats=await self.store.jobs.stats(),
            pauses=await self.store.controls.pauses(),
            cooldowns={
                lane: until.isoformat() for lane, until in (await self.store.controls.cooldowns()).items()
            },
            spend_today=await self.store.controls.spend_today(),
        )
