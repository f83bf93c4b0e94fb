"""The built-in `command` job type: runs any agent program and speaks JSON lines with it.

The agent writes one JSON object per line on stdout, each with a "type":
  progress {message} · evidence {summary, details} · cost {usd} · rate_limit {retry_after_seconds}
  decision_request {decision_id, question, options, timeout_seconds, default}
  result {result, review?: {summary, why, question}}
Answers go back as {"type": "decision_response", decision_id, answer, answered_by, source} on its stdin in
held mode (the slot stays held while it waits); in durable mode the run ends and the command runs again
later with every answer so far in QUEUEBOT_ANSWERS (a JSON object by decision_id), so no process waits.
The agent runs in its own process group, so ending a run also ends whatever it started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.context import DEFAULT_DECISION_TIMEOUT_S, JobContext, answer_of
from bot.endings import MAX_REASON_CHARS
from bot.jobtypes import job_type
from bot.outcomes import Ambiguous, Complete, FatalError, RateLimited, Review, TransientError
from store.models import Answer, AnswererPolicy
from store.states import DecisionState

log = logging.getLogger("queuebot.command")

#: How often a held run looks for the answer to its open decision.
HELD_POLL_INTERVAL_S = 0.25
#: Kept from stderr for the failure reason (which is capped at MAX_REASON_CHARS as a whole).
STDERR_TAIL_CHARS = 2000
#: After the agent is killed, how long to wait for stderr to close (a stray process may hold it open).
STDERR_DRAIN_TIMEOUT_S = 5.0
#: A line longer than this is not a protocol message.
MAX_LINE_BYTES = 4 * 1024 * 1024


class CommandInput(BaseModel):
    argv: list[str] = Field(min_length=1)
    mode: Literal["held", "durable"] = "durable"
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


def _answer_message(decision_id: str, answer: Answer) -> bytes:
    message = {
        "type": "decision_response",
        "decision_id": decision_id,
        "answer": answer.value,
        "answered_by": answer.by,
        "source": answer.source.value,
        "comment": answer.comment,
    }
    return (json.dumps(message) + "\n").encode()


class _Session:
    """One run of the agent program."""

    def __init__(self, ctx: JobContext, data: CommandInput) -> None:
        self.ctx = ctx
        self.data = data
        self.result: Any = None
        self.has_result = False
        self.review: dict[str, Any] | None = None

    def environment(self, answers: dict[str, Any]) -> dict[str, str]:
        job = self.ctx.job
        return {
            **os.environ,
            **self.data.env,
            "QUEUEBOT_JOB_ID": job.ref,
            "QUEUEBOT_ATTEMPT": str(self.ctx.attempt),
            "QUEUEBOT_MODE": self.data.mode,
            "QUEUEBOT_ANSWERS": json.dumps(answers),
            "QUEUEBOT_FEEDBACK": json.dumps(self.ctx.feedback),
        }

    async def handle(self, message: dict[str, Any], proc: asyncio.subprocess.Process) -> None:
        kind = message.get("type")
        ctx = self.ctx
        if kind == "progress":
            await ctx.progress(str(message.get("message", "")))
        elif kind == "evidence":
            details = message.get("details")
            # Written as ctx.evidence does, but without **details: the agent's details may use any key,
            # "summary" included, which as a keyword would clash with ctx.evidence's own parameter.
            await ctx.store.jobs.add_event(
                ctx.job.id,
                actor=ctx.actor,
                kind="evidence",
                reason=str(message.get("summary", "")),
                details=details if isinstance(details, dict) and details else None,
            )
        elif kind == "cost":
            await ctx.spend(float(message.get("usd", 0.0)))
        elif kind == "rate_limit":
            raise RateLimited(float(message.get("retry_after_seconds", message.get("retry_after", 60.0))))
        elif kind == "decision_request":
            answer = await self.decide(message)
            assert proc.stdin is not None
            # An agent that exited (or closed stdin) after asking simply does not get the answer this run.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(_answer_message(str(message["decision_id"]), answer))
                await proc.stdin.drain()
        elif kind == "result":
            self.result, self.has_result = message.get("result"), True
            review = message.get("review")
            self.review = review if isinstance(review, dict) else None
        else:
            await ctx.evidence("agent said something queuebot does not know", message=message)

    async def decide(self, message: dict[str, Any]) -> Answer:
        key = f"cmd:{message['decision_id']}"
        options = message.get("options") or ["yes", "no"]
        default = message.get("default")  # decision_round refuses one that is not an option
        timeout = message.get("timeout_seconds")
        kwargs: dict[str, Any] = {
            "default": default,
            "timeout": float(timeout) if timeout is not None else DEFAULT_DECISION_TIMEOUT_S,
            "allow_other": bool(message.get("allow_other", False)),
        }
        if self.data.mode == "durable":
            return await self.ctx.ask(key, str(message.get("question", "")), options, **kwargs)
        return await self.wait_held(key, str(message.get("question", "")), options, kwargs)

    async def wait_held(self, key: str, question: str, options: list[Any], kwargs: dict[str, Any]) -> Answer:
        """Open the decision (or find this job's earlier round of it) and wait for the answer with the
        process alive, heartbeating meanwhile. Like ctx.ask, a round that expired or was cancelled is asked
        again under a new round key, and an answered one is answered again at once (a rerun)."""
        ctx = self.ctx
        prepared = await ctx.decision_round(key, question, options, reload=True, **kwargs)
        if isinstance(prepared, Answer):
            return prepared
        decision = await ctx.store.decisions.open_now(ctx.job, prepared, channel=ctx.decision_channel)
        while decision.state is DecisionState.OPEN:
            await asyncio.sleep(HELD_POLL_INTERVAL_S)
            await ctx.heartbeat()
            decision = await ctx.store.decisions.get(decision.id)
        if decision.state is not DecisionState.ANSWERED:
            raise Ambiguous(f"{decision.ref} {decision.state.value} with no answer")
        return answer_of(decision)


async def _answers_so_far(ctx: JobContext) -> dict[str, Any]:
    """Answered decisions by the agent's own decision_id: a round asked again after its first round expired
    (key `cmd:<id>#2`) is still the answer to `<id>`."""
    decisions = await ctx.store.decisions.for_job(ctx.job.id)  # oldest first: a later round wins
    return {
        d.key.removeprefix("cmd:").partition("#")[0]: {
            "answer": d.answer,
            "answered_by": d.answered_by,
            "source": d.answer_source.value if d.answer_source else None,
        }
        for d in decisions
        if d.key.startswith("cmd:") and d.state is DecisionState.ANSWERED
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the agent and everything in its process group while its pid is still ours (not yet reaped)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        await proc.wait()


async def _tail(stream: asyncio.StreamReader, keep: int) -> str:
    """Read a stream to its end, keeping only its last `keep` characters."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep * 4 :]  # up to 4 bytes per character
    return tail.decode(errors="replace")[-keep:]


async def _stderr_tail(task: asyncio.Task[str]) -> str:
    try:
        return await asyncio.wait_for(task, STDERR_DRAIN_TIMEOUT_S)
    except TimeoutError:
        return "(stderr still held open by another process)"


def _exit_reason(program: str, returncode: int, stderr: str) -> str:
    """The failure reason, with as much of stderr's end as fits under the reason cap."""
    head = f"{program} exited with {returncode}: "
    text = stderr.strip() or "no stderr"
    room = max(0, MAX_REASON_CHARS - len(head))
    return head + (text if len(text) <= room else "…" + text[len(text) - room + 1 :])


@job_type("command", input=CommandInput, lane="heavy", answerers=AnswererPolicy())
async def command(ctx: JobContext, data: CommandInput) -> Any:
    """Runs an agent program that speaks queuebot's JSON-lines protocol."""
    session = _Session(ctx, data)
    try:
        proc = await asyncio.create_subprocess_exec(
            *data.argv,
            cwd=data.cwd,
            env=session.environment(await _answers_so_far(ctx)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
            start_new_session=hasattr(os, "killpg"),
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:  # retrying will not fix these
        raise FatalError(f"cannot start {data.argv[0]}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise TransientError(f"cannot start {data.argv[0]}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(_tail(proc.stderr, STDERR_TAIL_CHARS))
    try:
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                message = None
            if not isinstance(message, dict):
                await ctx.progress(text[:500])
                continue
            await session.handle(message, proc)
        returncode = await proc.wait()
    finally:
        await _stop(proc)
        stderr = await _stderr_tail(stderr_task)
    if returncode != 0:
        raise TransientError(_exit_reason(data.argv[0], returncode, stderr))
    if not session.has_result:
        raise TransientError(f"{data.argv[0]} exited without a result message")
    if session.review is not None:
        return Review(
            proposal=session.result,
            summary=str(session.review.get("summary", "")),
            why=str(session.review.get("why", "the agent asked for review")),
            question=str(session.review.get("question", "Approve this output?")),
        )
    return Complete(session.result)
