"""The `queuebot` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import click
import sqlalchemy.exc

from bot import app
from bot.durations import format_age
from bot.engine import Engine, JobView, StatusView
from bot.settings import Settings
from store.errors import QueuebotError
from store.models import decision_ref

T = TypeVar("T")


def _database_hint(exc: BaseException) -> str:
    try:
        safe = sqlalchemy.engine.make_url(Settings().database_url).render_as_string(hide_password=True)
    except (QueuebotError, sqlalchemy.exc.ArgumentError, ValueError):
        safe = "DATABASE_URL"
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"cannot use the database at {safe}: {text}"


def _one_line(text: str) -> str:
    """Errors are one line on stderr, whatever the message they wrap."""
    return " ".join(text.split()) or "failed"


def run_async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run a coroutine command, turning every expected failure into one line and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except QueuebotError as exc:
            raise click.ClickException(_one_line(str(exc))) from None
        except (
            OSError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.InterfaceError,
            sqlalchemy.exc.DBAPIError,
        ) as exc:
            raise click.ClickException(_one_line(_database_hint(exc))) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what workers and the scheduler do.")
def cli(verbose: bool) -> None:
    """queuebot: a Slack-native work queue for background AI agents."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@cli.command()
@run_async
async def migrate() -> None:
    """Create or upgrade the database schema."""
    async with app.open_engine():
        pass
    click.echo("database is up to date")


@cli.command()
@click.argument("job_type")
@click.option("--input", "input_json", default="{}", help="The job's input as a JSON object.")
@click.option("--priority", type=click.Choice(["P0", "P1", "P2"]), default=None)
@click.option("--key", default=None, help="Idempotency key: enqueuing the same key again returns that job.")
@click.option("--owner", default=None, help="Slack user id of the job's owner.")
@click.option("--channel", default=None, help="Slack channel for its decisions and review items.")
@run_async
async def enqueue(
    job_type: str,
    input_json: str,
    priority: str | None,
    key: str | None,
    owner: str | None,
    channel: str | None,
) -> None:
    """Add a job; prints its id (Q-N)."""
    async with app.open_engine() as engine:
        enqueued = await engine.enqueue(
            job_type, input_json, priority=priority, key=key, owner=owner, channel=channel
        )
    click.echo(enqueued.job.ref)
    if not enqueued.created:
        click.echo(f"(key {key!r} already had {enqueued.job.ref}; nothing new enqueued)", err=True)


def _status_json(view: StatusView) -> dict[str, Any]:
    return {
        "states": view.stats.states,
        "lanes": view.stats.lanes,
        "oldest_waiting_s": view.stats.oldest_waiting_s,
        "sla_breaches": view.stats.sla_breaches,
        "pauses": [{"scope": p.scope, "name": p.name, "by": p.paused_by} for p in view.pauses],
        "cooldowns": view.cooldowns,
        "spend_today_usd": view.spend_today,
    }


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run_async
async def status(as_json: bool) -> None:
    """Counts by state and lane, oldest waiting age, SLA breaches, pauses."""
    async with app.open_engine() as engine:
        view = await engine.status()
    if as_json:
        click.echo(json.dumps(_status_json(view), indent=2))
        return
    stats = view.stats
    click.echo("state              count  oldest waiting")
    for state, count in stats.states.items():
        if count:
            age = stats.oldest_waiting_s.get(state)
            click.echo(f"{state:<18} {count:>5}  {format_age(age) if age is not None else ''}")
    click.echo(f"SLA breaches: {stats.sla_breaches}")
    for lane, counts in sorted(stats.lanes.items()):
        click.echo(f"lane {lane}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    for pause in view.pauses:
        click.echo(f"paused: {pause.scope} {pause.name} (by {pause.paused_by})".replace("  ", " "))
    for lane, until in view.cooldowns.items():
        click.echo(f"cooling down: lane {lane} until {until}")


def job_view_json(view: JobView) -> dict[str, Any]:
    """The shape `queuebot show --json` prints (kept stable for scripts)."""
    job = view.job
    return {
        "id": job.ref,
        "type": job.type,
        "state": job.state.value,
        "result": job.result,
        "lane": job.lane,
        "priority": job.priority.value,
        "owner": job.owner,
        "channel": job.channel,
        "input": job.input,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "reason": job.reason,
        "failure_class": job.failure_class,
        "spend_usd": job.spend_usd,
        "parent": f"Q-{job.parent_id}" if job.parent_id else None,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "deadline_at": job.deadline_at.isoformat() if job.deadline_at else None,
        "sla_at": job.sla_at.isoformat() if job.sla_at else None,
        "events": [
            {
                "kind": e.kind,
                "actor": e.actor,
                "at": e.at.isoformat(),
                "from": e.from_state,
                "to": e.to_state,
                "reason": e.reason,
                "details": e.details,
                "decision": decision_ref(e.decision_id) if e.decision_id else None,
            }
            for e in view.events
        ],
        "decisions": [
            {
                "id": d.ref,
                "key": d.key,
                "kind": d.kind.value,
                "state": d.state.value,
                "question": d.question,
                "options": d.option_values,
                "answer": d.answer,
                "answered_by": d.answered_by,
                "source": d.answer_source.value if d.answer_source else None,
                "comment": d.comment,
                "timeout_at": d.timeout_at.isoformat(),
            }
            for d in view.decisions
        ],
    }


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run_async
async def show(job: str, as_json: bool) -> None:
    """A job and its evidence trail."""
    async with app.open_engine() as engine:
        view = await engine.show(job)
    data = job_view_json(view)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{data['id']}  {data['type']}  {data['state']}  lane {data['lane']}  {data['priority']}")
    if data["reason"]:
        click.echo(f"reason: {data['reason']}")
    if data["result"] is not None:
        click.echo(f"result: {json.dumps(data['result'], default=str)[:500]}")
    for d in data["decisions"]:
        answered = f" → {d['answer']} by {d['answered_by']} ({d['source']})" if d["answer"] else ""
        click.echo(f"{d['id']} [{d['state']}] {d['question']} options: {', '.join(d['options'])}{answered}")
    click.echo("trail:")
    for e in data["events"]:
        move = f" {e['from'] or ''}→{e['to']}" if e["to"] else ""
        why = f" — {e['reason']}" if e["reason"] else ""
        click.echo(f"  {e['at'][:23]}  {e['kind']:<18} {e['actor']}{move}{why}")


@cli.command()
@click.argument("decision")
@click.argument("value")
@click.option("--as", "actor", required=True, help="Who answers (a Slack user id).")
@click.option("--comment", default=None, help="A reason or feedback to record with the answer.")
@run_async
async def answer(decision: str, value: str, actor: str, comment: str | None) -> None:
    """Answer a decision (D-N) as a user; the first permitted answer wins."""
    async with app.open_engine() as engine:
        answered = await engine.answer(decision, value, actor=actor, comment=comment)
    if answered.decision.state.value == "open":
        click.echo(
            f"{answered.decision.ref}: vote recorded ({answered.counted_votes} of {answered.decision.quorum})"
        )
    else:
        click.echo(
            f"{answered.decision.ref} answered {answered.decision.answer}; "
            f"{answered.job.ref} is {answered.job.state.value}"
        )


def _job_command(name: str, help_text: str, action: Callable[[Engine, str, str], Awaitable[Any]]) -> None:
    @cli.command(name=name, help=help_text)
    @click.argument("target")
    @click.option("--as", "actor", default="cli", help="Who acts (a Slack user id); the CLI is an admin.")
    @run_async
    async def command(target: str, actor: str) -> None:
        async with app.open_engine() as engine:
            outcome = await action(engine, target, actor)
        click.echo(outcome)


async def _cancel(engine: Engine, target: str, actor: str) -> str:
    return f"{(await engine.cancel(target, actor=actor)).ref} cancelled"


async def _retry(engine: Engine, target: str, actor: str) -> str:
    return f"{(await engine.retry(target, actor=actor)).ref} is ready again"


async def _pause(engine: Engine, target: str, actor: str) -> str:
    return f"paused {target} ({await engine.pause(target, actor=actor)} jobs held)"


async def _resume(engine: Engine, target: str, actor: str) -> str:
    return f"resumed {target} ({await engine.resume(target, actor=actor)} jobs ready again)"


async def _ack(engine: Engine, target: str, actor: str) -> str:
    job = await engine.acknowledge(target, actor=actor)
    return f"{job.ref} acknowledged by {job.acknowledged_by}"


_job_command("cancel", "Cancel a job (a running one stops at its next heartbeat).", _cancel)
_job_command("retry", "Re-queue a dead, expired, cancelled, blocked or escalated job.", _retry)
_job_command("pause", "Pause `all`, a lane, a job type or a job (Q-N): the kill switch.", _pause)
_job_command("resume", "Lift a pause.", _resume)
_job_command("ack", "Acknowledge an overdue job: its escalation ladder stops.", _ack)


@cli.command()
@click.option("--until-idle", is_flag=True, help="Return once no job is ready, running or due to retry soon.")
@run_async
async def work(until_idle: bool) -> None:
    """Run the workers and the scheduler (no Slack)."""
    async with app.open_engine() as engine:
        if not until_idle:
            _announce(engine)
        worker = await app.work(engine, until_idle=until_idle)
    if until_idle:
        click.echo(f"idle: {worker.completed_runs} runs ended", err=True)


@cli.command()
@run_async
async def run() -> None:
    """Run queuebot: serve Slack (or, with no Slack credentials, a local sandbox workspace), deliver
    notifications, run the workers and the scheduler."""
    settings, _ = app.load()
    missing = app.missing_slack_settings(settings)
    async with app.open_engine(settings) as engine:
        _announce(engine)
        if missing:
            from bot.sandbox_run import run_sandbox

            await run_sandbox(engine, settings, missing=missing, announce=click.echo)
        else:
            await app.serve(engine, settings)


def _announce(engine: Engine) -> None:
    url = sqlalchemy.engine.make_url(engine.store.db.url).render_as_string(hide_password=True)
    lanes = ", ".join(f"{lane} {slots}" for lane, slots in engine.config.lanes.items())
    click.echo(
        f"queuebot is working on {url} (lanes: {lanes}; job types: {', '.join(engine.types.names())}).\n"
        'Add work from another terminal, e.g. `queuebot enqueue demo.ask --input \'{"question": "Ship?"}\'`,'
        " then `queuebot status`. Ctrl-C stops.",
        err=True,
    )


@cli.command()
def types() -> None:
    """List the job types this configuration knows."""
    try:
        app.load()
    except QueuebotError as exc:
        raise click.ClickException(_one_line(str(exc))) from None
    from bot.jobtypes import registry

    for job_type in registry:
        click.echo(f"{job_type.name:<16} lane {job_type.lane:<7} {job_type.description}")


#: A bare `queuebot` shows the help (click 8.2+ raises this UsageError for it; 8.1 exits 0 instead).
_HELP_FOR_NO_ARGS: tuple[type[Exception], ...] = tuple(
    cls for cls in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if cls is not None
)


def main() -> None:
    """The console script: every error, a usage error included, is one line on stderr."""
    try:
        code = cli.main(prog_name="queuebot", standalone_mode=False)
    except _HELP_FOR_NO_ARGS as exc:
        assert isinstance(exc, click.UsageError)
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "queuebot"
        click.echo(f"Error: {_one_line(exc.format_message())} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
