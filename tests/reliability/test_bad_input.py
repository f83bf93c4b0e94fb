"""Scenario 6, bad input: property-based fuzzing (hypothesis) of `/queue` text, modal values, button values
and job inputs, all sent as signed requests to the bot's real HTTP app. Never a 5xx, never a traceback shown
to a person or a listener failing in the log, never a partial job; oversized agent output is cut to fit
Slack and kept whole in the job and its trail."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bot import blocks
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Retry, job_type
from bot.outcomes import TransientError
from handlers.new_job_modal import FIELD_ACTION, JSON_BLOCK, TYPE_BLOCK, TYPE_INPUT
from sandbox.signed_requests import SlackRequest
from tests.helpers import drain
from tests.reliability.conftest import CHANNEL, OWNER, Workspace

pytestmark = pytest.mark.reliability

#: Examples per property; the CI default keeps the suite in minutes, QUEUEBOT_RELIABILITY_EXAMPLES raises it.
EXAMPLES = int(os.environ.get("QUEUEBOT_RELIABILITY_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: What a traceback or a Python error leaks when it reaches a person.
LEAKS = ("Traceback", 'File "', "Error(", "sqlalchemy", "asyncpg", "psycopg")

#: Characters that break parsers: quotes of every kind, Slack's escapes, brackets, NUL and other controls.
NASTY = st.sampled_from(
    [
        *"\"'\u201c\u201d\u2018\u2019<>&=[]{}:@#!|\\\x00\x01\n\t\r `*_~\u2026",
        "&amp;",
        "&lt;",
        "<@U1|x>",
        "D-1",
        "Q-1",
    ]
)
TEXT = st.lists(st.one_of(st.characters(), NASTY), max_size=40).map("".join)
VERBS = [
    "add demo.echo",
    "add demo.sleep",
    "add demo.flaky",
    "add demo.ask",
    "add command",
    "add nope",
    "list",
    "show",
    "cancel",
    "retry",
    "pause",
    "resume",
    "ack",
    "help",
    "stats",
    "new demo.echo",
    "lsit",
]
SLASH_TEXT = st.one_of(
    TEXT,
    st.builds(lambda verb, rest: f"{verb} {rest}", st.sampled_from(VERBS), TEXT),
    st.builds(
        lambda key, value: f"add demo.echo {key}={value}", st.sampled_from(["text", "priority", "x"]), TEXT
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["text", "seconds", "fail_times", "question", "argv", "mode", "ticket", "action"])
JOB_INPUT = st.dictionaries(FIELDS | TEXT, JSON, max_size=4)
JOB_TYPES = ["demo.echo", "demo.sleep", "demo.flaky", "demo.ask", "demo.triage", "command"]
BUTTONS = [
    "answer:yes",
    blocks.OTHER_ACTION,
    blocks.EVIDENCE_ACTION,
    blocks.ACKNOWLEDGE_ACTION,
    blocks.RETRY_ACTION,
    blocks.CANCEL_ACTION,
]


def _shown_is_clean(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"a person was shown {leak!r}: {text[:500]!r}"


async def _no_partial_jobs(engine: Engine) -> None:
    """Every job was written whole: its input fits its type and its trail starts with `enqueued`."""
    for job in await engine.store.jobs.list(limit=100_000):
        engine.types.get(job.type).input.model_validate(job.input)
        first = (await engine.store.jobs.events(job.id))[0]
        assert first.kind == "enqueued", job.ref


def _no_listener_failures(caplog: pytest.LogCaptureFixture) -> None:
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, "\n".join(f"{r.name}: {r.getMessage()}" for r in failures[:5])


async def _command(ws: Workspace, text: str) -> str:
    delivery = await ws.slack.send(ws.slack.slash_command(OWNER, text, channel=CHANNEL))
    assert delivery.status < 500, (text, delivery.status, delivery.text)
    assert delivery.status == 200, (text, delivery.status, delivery.text)
    _shown_is_clean(delivery.text)
    return delivery.text


@pytest.fixture(autouse=True)
def _log_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)


@FUZZ
@given(text=SLASH_TEXT)
@example(text="add demo.echo text=a\x00b")  # PostgreSQL cannot store a NUL in text or JSON
@example(text="cancel Q-1 because\x00")
@example(text="pause all because\x00")
@example(text="add demo.echo text=x idempotency_key=k\x00")
@example(text='add demo.sleep seconds=1e999 {"x": [[[[[[[[]]]]]]]]}')
async def test_any_queue_text_gets_an_answer_never_a_5xx_or_a_traceback(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    await _command(workspace, text)
    await _no_partial_jobs(engine)
    _no_listener_failures(caplog)


@FUZZ
@given(type_name=st.sampled_from(JOB_TYPES), data=JOB_INPUT)
@example(type_name="demo.echo", data={"text": "a\x00b"})
@example(type_name="command", data={"argv": ["x"], "env": {"K\x00": "v"}})
@example(type_name="demo.flaky", data={"fail_times": 10**30})
async def test_any_job_input_is_taken_whole_or_refused_with_a_reason(
    engine: Engine,
    workspace: Workspace,
    caplog: pytest.LogCaptureFixture,
    type_name: str,
    data: dict[str, Any],
) -> None:
    reply = await _command(workspace, f"add {type_name} {json.dumps(data)}")
    assert reply.startswith(("Created Q-", "input for", "`add`", "the JSON input")) or "Usage" in reply, reply
    await _no_partial_jobs(engine)
    _no_listener_failures(caplog)


async def _open_modal(ws: Workspace, text: str) -> str:
    before = len(ws.fake.calls_to("views.open", ok=True))
    await _command(ws, text)
    await ws.fake.wait_for(lambda: len(ws.fake.calls_to("views.open", ok=True)) > before, timeout=10)
    return str(ws.fake.calls_to("views.open", ok=True)[-1].response["view"]["id"])


@FUZZ
@given(
    form=st.sampled_from(["new demo.echo", "new demo.flaky", "new demo.sleep", "new"]),
    value=TEXT,
    chosen=st.sampled_from(JOB_TYPES) | TEXT,
)
@example(form="new demo.echo", value="a\x00b", chosen="demo.echo")
@example(form="new", value='{"text": "a\\u0000b"}', chosen="demo.echo")
@example(form="new", value="[1, 2]", chosen="no.such.type")
async def test_any_modal_values_are_refused_field_by_field_or_make_one_whole_job(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture, form: str, value: str, chosen: str
) -> None:
    view_id = await _open_modal(workspace, form)
    if form == "new":
        values: dict[str, Any] = {
            TYPE_BLOCK: {TYPE_INPUT: {"type": "static_select", "selected_option": {"value": chosen}}},
            JSON_BLOCK: {FIELD_ACTION: value},
        }
    else:
        field = {"new demo.echo": "text", "new demo.flaky": "fail_times", "new demo.sleep": "seconds"}[form]
        values = {f"field:{field}": {FIELD_ACTION: value}}
    delivery = await workspace.slack.send(workspace.slack.view_submission(OWNER, view_id, values))
    assert delivery.status == 200, (values, delivery.status, delivery.text)
    _shown_is_clean(delivery.text)
    answer = delivery.json()
    if answer is not None:
        assert answer["response_action"] == "errors" and all(len(e) <= 150 for e in answer["errors"].values())
    await _no_partial_jobs(engine)
    _no_listener_failures(caplog)


@FUZZ
@given(
    action_id=st.sampled_from(BUTTONS),
    value=TEXT | st.builds(lambda n, o: f"D-{n}:{o}", st.integers(-5, 10**20), TEXT),
)
@example(action_id="answer:yes", value="D-1:\x00")
@example(action_id=blocks.OTHER_ACTION, value="D-99999999999999999999")
async def test_any_button_value_is_refused_politely(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture, action_id: str, value: str
) -> None:
    decisions = await engine.store.decisions.open()
    if not decisions:  # the first example posts a decision to click on
        await engine.enqueue("demo.ask", {"question": "Ship it?"}, channel=CHANNEL, owner=OWNER)
        await drain(engine)
        await workspace.deliver()
        decisions = await engine.store.decisions.open()
    ts = decisions[0].message_ts
    assert ts is not None
    genuine = workspace.slack.block_actions(OWNER, "answer:approve", channel=CHANNEL, message_ts=ts)
    payload = json.loads(json.dumps(genuine.payload))
    payload["actions"][0].update(action_id=action_id, value=value)
    forged = SlackRequest.signed(
        workspace.fake.signing_secret, genuine.timestamp, payload, form={"payload": json.dumps(payload)}
    )
    delivery = await workspace.slack.send(forged)
    assert delivery.status == 200, (action_id, value, delivery.status)
    await workspace.fake.wait_for(
        lambda: bool(workspace.fake.response_posts(genuine.response_url or "")), timeout=10
    )
    for post in workspace.fake.response_posts(genuine.response_url or ""):
        _shown_is_clean(str(post.get("text")))
    _no_listener_failures(caplog)


class Big(BaseModel):
    chars: int


async def test_oversized_agent_output_is_cut_for_slack_and_kept_whole_in_the_trail(
    engine: Engine, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    @job_type("test.big_evidence", input=Big, lane="fast", into=engine.types)
    async def big_evidence(ctx: JobContext, data: Big) -> str:
        await ctx.evidence("E" * data.chars, blob="b" * data.chars)
        return "done"

    @job_type("test.big_failure", input=Big, lane="fast", retry=Retry(max_attempts=1), into=engine.types)
    async def big_failure(ctx: JobContext, data: Big) -> str:
        raise TransientError("F" * data.chars)

    size = 50_000
    review = (await engine.enqueue("demo.review", {"text": "R" * size}, channel=CHANNEL, owner=OWNER)).job.id
    evidence = (
        await engine.enqueue("test.big_evidence", {"chars": size}, channel=CHANNEL, owner=OWNER)
    ).job.id
    failure = (await engine.enqueue("test.big_failure", {"chars": size}, channel=CHANNEL, owner=OWNER)).job.id
    await drain(engine)
    await workspace.deliver()
    fake = workspace.fake
    assert fake.calls_to("chat.postMessage", ok=False) == []
    [decision] = await engine.store.decisions.for_job(review)
    assert decision.message_ts is not None
    posted = str(fake.message(CHANNEL, decision.message_ts)["blocks"])
    assert "(cut: see Evidence)" in posted and "R" * size not in posted
    assert (await engine.store.jobs.get(review)).result == "R" * size  # the whole proposal is kept

    for job_id in (review, evidence, failure):
        click_ts = decision.message_ts
        click = workspace.slack.block_actions(
            OWNER, blocks.EVIDENCE_ACTION, channel=CHANNEL, message_ts=click_ts
        )
        payload = json.loads(json.dumps(click.payload))
        payload["actions"][0]["value"] = f"Q-{job_id}"
        request = SlackRequest.signed(
            fake.signing_secret, click.timestamp, payload, form={"payload": json.dumps(payload)}
        )
        before = len(fake.calls_to("views.open"))
        assert (await workspace.slack.send(request)).status == 200
        await fake.wait_for(lambda before=before: len(fake.calls_to("views.open")) > before, timeout=10)
        assert fake.calls_to("views.open")[-1].ok, fake.calls_to("views.open")[-1].response

    trail = await engine.store.jobs.events(evidence)
    [kept] = [e for e in trail if e.kind == "evidence"]
    assert kept.reason == "E" * size and kept.details == {"blob": "b" * size}

    dead = await engine.store.jobs.get(failure)
    assert dead.reason is not None and len(dead.reason) <= 2000  # short on the job and in Slack notes
    whole = [e for e in await engine.store.jobs.events(failure) if "F" * size in json.dumps(e.details or {})]
    assert whole, "the full failure message is kept in the trail"
    notes = [c for c in fake.calls_to("chat.postMessage") if f"Q-{failure}" in str(c.args.get("text"))]
    assert notes and all(c.ok for c in notes)
    _no_listener_failures(caplog)
