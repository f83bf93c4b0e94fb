"""Job types for the queuebot processes the fault-injection suite starts (loaded through queuebot.toml's
`job_modules`). Each writes what it did to a file named in its input, so the test can check from outside
what ran, in which run, when, and how many times. Not imported by the test process itself: its registry
stays as the other tests expect it."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from bot.context import JobContext
from bot.jobtypes import Retry, job_type

#: Crashes spend attempts (a reaped orphan spends one); these jobs must survive every kill of the suite.
SURVIVE_KILLS = Retry(max_attempts=50, base_delay_s=0.05, max_delay_s=0.2)


class EffectInput(BaseModel):
    #: the "remote system": one line per call, `<job id> <run>`; the remote applies a job's key once
    ledger: str
    work_s: float = Field(default=0.0, ge=0, le=5)


def append_line(path: str, line: str) -> None:
    """One short append: a kill -9 leaves the line whole or absent."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


@job_type("chaos.effect", input=EffectInput, lane="fast", retry=SURVIVE_KILLS)
async def effect(ctx: JobContext, data: EffectInput) -> dict[str, int]:
    """Works, sends one irreversible effect guarded by `once` (keyed by the job), works again, completes."""
    await asyncio.sleep(data.work_s)

    def send() -> int:
        append_line(data.ledger, f"{ctx.job.id} {ctx.job.run_seq}")
        return ctx.job.run_seq

    sent_in_run = await ctx.once("effect", send)
    await asyncio.sleep(data.work_s)
    return {"sent_in_run": int(sent_in_run)}


class IntervalInput(BaseModel):
    #: one line per run: `<job id> <run> <worker> <start> <end>` (wall-clock seconds)
    log: str
    work_s: float = Field(default=0.02, ge=0, le=5)


@job_type("chaos.interval", input=IntervalInput, lane="fast", retry=SURVIVE_KILLS)
async def interval(ctx: JobContext, data: IntervalInput) -> str:
    """Records when this run started and ended, and which worker ran it."""
    started = time.time()
    await asyncio.sleep(data.work_s)
    append_line(data.log, f"{ctx.job.id} {ctx.job.run_seq} {ctx.worker} {started:.6f} {time.time():.6f}")
    return "done"
