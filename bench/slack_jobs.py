"""Job types for bench/slack_ack.py: the bot under test loads them through `job_modules`, the benchmark
imports them to enqueue work of these types."""

from __future__ import annotations

from pydantic import BaseModel

from bot.context import JobContext
from bot.jobtypes import job_type
from store.models import AnswererPolicy

#: The backlog the workers drain while the clicks and commands arrive.
NOOP_TYPE = "bench.noop"
#: A job that asks one question and completes with the answer.
ASK_TYPE = "bench.ask"
BACKLOG_LANE = "bulk"
ASK_LANE = "fast"


class Numbered(BaseModel):
    i: int = 0


@job_type(NOOP_TYPE, input=Numbered, lane=BACKLOG_LANE)
async def noop(ctx: JobContext, data: Numbered) -> None:
    return None


@job_type(ASK_TYPE, input=Numbered, lane=ASK_LANE, answerers=AnswererPolicy(anyone=True))
async def ask(ctx: JobContext, data: Numbered) -> str:
    return (await ctx.ask("go", f"Go on with {data.i}?", ["yes", "no"])).value
