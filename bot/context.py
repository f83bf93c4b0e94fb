"""JobContext: what a running handler can do — heartbeat, evidence, spend, authority checks, write-once
markers, child jobs and durable decisions."""

from __future__ import annotations

import fnmatch
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from bot import instruments
from bot.durations import parse_duration_s
from bot.outcomes import BudgetExceeded, DecisionPending, JobStopped, PolicyBlocked
from store.models import Answer, AnswererPolicy, Decision, DecisionOption, DecisionSpec, Job
from store.states import DecisionState

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.jobtypes import JobType

#: Default time a decision waits for a person before its default or an escalation.
DEFAULT_DECISION_TIMEOUT_S = 1800.0
#: A handler calling heartbeat() in a tight loop writes at most this often.
MIN_HEARTBEAT_WRITE_INTERVAL_S = 0.5

OptionLike = str | DecisionOption | dict[str, Any]


def as_option(option: OptionLike) -> DecisionOption:
    if isinstance(option, DecisionOption):
        return option
    if isinstance(option, str):
        return DecisionOption(value=option, label=option)
    return DecisionOption.model_validate(option)


def answer_of(decision: Decision) -> Answer:
    assert decision.answer is not None and decision.answer_source is not None
    return Answer(
        value=decision.answer,
        by=decision.answered_by or "unknown",
        source=decision.answer_source,
        comment=decision.comment,
    )


class JobContext:
    """Handed to every handler run; all writes go through the store with this run's job."""

    def __init__(
        self, engine: Engine, job_type: JobType, job: Job, decisions: Sequence[Decision], worker: str
    ) -> None:
        self.engine = engine
        self.job_type = job_type
        self.job = job
        self.worker = worker
        self.run_spend_usd = 0.0
        self.stopped = False  # set by the worker when a heartbeat finds the job taken away
        self._decisions = {decision.key: decision for decision in decisions}
        self._last_beat = time.monotonic()

    @property
    def store(self) -> Any:
        return self.engine.store

    @property
    def feedback(self) -> list[str]:
        """Review feedback from earlier rounds (Request changes), oldest first."""
        return list(self.job.feedback)

    @property
    def attempt(self) -> int:
        """1 for the first try; failures so far plus one."""
        return self.job.attempts + 1

    @property
    def actor(self) -> str:
        return f"agent:{self.job.type}"

    async def heartbeat(self) -> None:
        """Tell the queue this run is alive; raises JobStopped if the job was cancelled, paused or expired."""
        if self.stopped:
            raise JobStopped(self.job.ref)
        if time.monotonic() - self._last_beat < MIN_HEARTBEAT_WRITE_INTERVAL_S:
            return
        self._last_beat = time.monotonic()
        alive = await self.store.claims.heartbeat([(self.job.id, self.job.run_seq)], worker=self.worker)
        if self.job.id not in alive:
            self.stopped = True
            raise JobStopped(self.job.ref)

    async def evidence(self, summary: str, /, **details: Any) -> None:
        """Add to the job's evidence trail."""
        await self.store.jobs.add_event(
            self.job.id, actor=self.actor, kind="evidence", reason=summary, details=details or None
        )

    async def progress(self, message: str) -> None:
        await self.store.jobs.add_event(self.job.id, actor=self.actor, kind="progress", reason=message)
        await self.heartbeat()

    async def spend(self, usd: float) -> None:
        """Record spend; raises BudgetExceeded when a run, job or daily cap is passed."""
        if usd < 0:
            raise ValueError("spend must not be negative")
        self.run_spend_usd += usd
        spent = await self.store.controls.spend(self.job.id, self.job.type, usd, actor=self.actor)
        config = self.engine.config
        own = self.job_type.budget
        per_type = config.type_budgets.get(self.job.type)
        per_run = own.per_run_usd or (per_type and per_type.per_run_usd) or config.budgets.per_run_usd
        per_job = (
            self.job.budget_usd
            or own.per_job_usd
            or (per_type and per_type.per_job_usd)
            or config.budgets.per_job_usd
        )
        per_day_type = own.per_day_usd or (per_type and per_type.per_day_usd)
        checks = [
            (per_run, self.run_spend_usd, "this run"),
            (per_job, spent.job_usd, "this job"),
            (per_day_type, spent.type_today_usd, f"{self.job.type} today"),
            (config.budgets.per_day_usd, spent.all_today_usd, "all jobs today"),
        ]
        for cap, total, scope in checks:
            if cap is not None and total > cap:
                raise BudgetExceeded(f"spent ${total:.2f} on {scope}, over the ${cap:.2f} budget")

    def require(self, action: str) -> None:
        """An authority boundary: raises PolicyBlocked unless the job type `may` do this."""
        if action not in self.job_type.may:
            allowed = ", ".join(sorted(self.job_type.may)) or "nothing"
            raise PolicyBlocked(f"{self.job.type} may not {action} (it may: {allowed})")

    async def once(self, key: str, fn: Callable[[], Awaitable[Any] | Any]) -> Any:
        """Run an irreversible action at most once per job: a replayed run gets the first run's value."""
        found, value = await self.store.controls.marker(self.job.id, key)
        if found:
            return value
        produced = fn()
        if inspect.isawaitable(produced):
            produced = await produced
        return await self.store.controls.put_marker(self.job.id, key, produced)

    async def enqueue(
        self, type_name: str, input: dict[str, Any], *, key: str | None = None, priority: str | None = None
    ) -> Job:
        """Spawn a child job linked to this one."""
        enqueued = await self.engine.enqueue(
            type_name,
            input,
            actor=f"job:{self.job.id}",
            key=key,
            priority=priority,
            owner=self.job.owner,
            channel=self.job.channel,
            parent_id=self.job.id,
        )
        return enqueued.job

    async def ask(
        self,
        key: str,
        question: str,
        options: Sequence[OptionLike],
        *,
        default: str | None = None,
        timeout: str | float = DEFAULT_DECISION_TIMEOUT_S,
        answerers: AnswererPolicy | None = None,
        allow_other: bool = False,
        risk: str | None = None,
    ) -> Answer:
        """Ask people a question. The first time, the run ends here and the job waits (no slot held); when
        answered the handler runs again from the top and this call returns the stored answer."""
        prepared = await self.decision_round(
            key,
            question,
            options,
            default=default,
            timeout=timeout,
            answerers=answerers,
            allow_other=allow_other,
            risk=risk,
        )
        if isinstance(prepared, Answer):
            return prepared
        rule = self._auto_rule(prepared.key, risk)
        if rule is not None:
            recorded = await self.store.decisions.record_auto_answer(
                self.job, prepared, rule.answer, rule=rule.name, channel=self.decision_channel
            )
            self._decisions[prepared.key] = recorded
            instruments.decision_closed(recorded)
            return answer_of(recorded)
        raise DecisionPending(prepared)

    async def decision_round(
        self,
        key: str,
        question: str,
        options: Sequence[OptionLike],
        *,
        default: str | None = None,
        timeout: str | float = DEFAULT_DECISION_TIMEOUT_S,
        answerers: AnswererPolicy | None = None,
        allow_other: bool = False,
        risk: str | None = None,
        reload: bool = False,
    ) -> Answer | DecisionSpec:
        """The stored answer to `key` if its latest round was answered; otherwise the decision to open (or
        the open one), under a new round key (`key#2`…) when the last round expired or was cancelled."""
        if reload:
            self._decisions = {d.key: d for d in await self.store.decisions.for_job(self.job.id)}
        decision = self._latest(key)
        if decision is not None and decision.state is DecisionState.ANSWERED:
            return answer_of(decision)
        spec = DecisionSpec(
            key=key if decision is None else self._next_round_key(key, decision),
            question=question,
            options=[as_option(option) for option in options],
            default=default,
            timeout_s=parse_duration_s(timeout),
            allow_other=allow_other,
            risk=risk,
            answerers=answerers or self.job_type.answerers or AnswererPolicy(),
        )
        if default is not None and default not in spec.option_values:
            raise ValueError(f"default {default!r} is not one of the options")
        return spec

    @property
    def decision_channel(self) -> str | None:
        return self.job.channel or self.job_type.channel or self.engine.config.default_channel

    def _latest(self, key: str) -> Decision | None:
        rounds = [d for k, d in self._decisions.items() if k == key or k.startswith(f"{key}#")]
        return max(rounds, key=lambda d: d.id) if rounds else None

    @staticmethod
    def _next_round_key(key: str, decision: Decision) -> str:
        """A decision that expired or was cancelled is asked again under a new round key."""
        if decision.state is DecisionState.OPEN:
            return decision.key
        _, _, number = decision.key.partition("#")
        return f"{key}#{int(number or 1) + 1}"

    def _auto_rule(self, key: str, risk: str | None) -> Any:
        if risk is None:
            return None
        rank = {"low": 0, "medium": 1, "high": 2}
        for rule in self.engine.config.auto_answer:
            if (
                fnmatch.fnmatchcase(self.job.type, rule.type)
                and fnmatch.fnmatchcase(key.partition("#")[0], rule.key)
                and rank.get(risk, 2) <= rank[rule.max_risk]
            ):
                return rule
        return None
