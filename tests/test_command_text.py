"""The `/queue` text parser: every verb, every error message, Slack's escaping, and a property test."""

from __future__ import annotations

import pytest

from handlers.command_text import (
    USAGE,
    VERBS,
    AckCommand,
    AddCommand,
    CancelCommand,
    CommandTextError,
    HelpCommand,
    ListCommand,
    NewCommand,
    PauseCommand,
    ResumeCommand,
    RetryCommand,
    ShowCommand,
    StatsCommand,
    clean_slack_text,
    parse_command_text,
    parse_job_id,
)
from store.states import JobState, Priority


def problem(text: str) -> str:
    """The problem part of the error the text raises; also checks the usage follows it."""
    with pytest.raises(CommandTextError) as caught:
        parse_command_text(text)
    error = caught.value
    assert str(error) == f"{error.problem}\n\n*Usage*\n{USAGE}"
    return error.problem


# ---- happy paths, one verb at a time ---------------------------------------------------------------


def test_add_key_values_with_json_inference() -> None:
    command = parse_command_text(
        'add demo.sleep seconds=2.5 fail_times=2 ok=true off=false none=null argv=["a", "b"] '
        'opts={"k": [1, {"z": "]"}]} text="hello world" word=plain'
    )
    assert command == AddCommand(
        type_name="demo.sleep",
        input={
            "seconds": 2.5,
            "fail_times": 2,
            "ok": True,
            "off": False,
            "none": None,
            "argv": ["a", "b"],
            "opts": {"k": [1, {"z": "]"}]},
            "text": "hello world",
            "word": "plain",
        },
        raw_input={
            "seconds": "2.5",
            "fail_times": "2",
            "ok": "true",
            "off": "false",
            "none": "null",
            "argv": '["a", "b"]',
            "opts": '{"k": [1, {"z": "]"}]}',
            "text": "hello world",
            "word": "plain",
        },
    )


def test_add_values_that_stay_strings() -> None:
    command = parse_command_text(
        "add t quoted=\"2\" single='3 4' lead=007 nan=NaN inf=1e999 True=True tag=[WIP]x empty= "
        "eq=a=b apostrophe=don't path=C:\\tmp"
    )
    assert isinstance(command, AddCommand)
    assert command.input == {
        "quoted": "2",
        "single": "3 4",
        "lead": "007",
        "nan": "NaN",
        "inf": "1e999",
        "True": "True",
        "tag": "[WIP]x",
        "empty": "",
        "eq": "a=b",
        "apostrophe": "don't",
        "path": "C:\\tmp",
    }


def test_add_escapes_inside_double_quotes_and_typographic_quotes() -> None:
    command = parse_command_text(
        'add t a="say \\"hi\\" \\\\ \\n" b=\u201cphone quotes\u201d c=\u2018one\u2019'
    )
    assert isinstance(command, AddCommand)
    assert command.input == {"a": 'say "hi" \\ \\n', "b": "phone quotes", "c": "one"}


def test_add_options_are_not_input() -> None:
    command = parse_command_text("add demo.echo text=hi priority=p0 idempotency_key=nightly-42")
    assert command == AddCommand(
        type_name="demo.echo",
        input={"text": "hi"},
        priority=Priority.P0,
        idempotency_key="nightly-42",
        raw_input={"text": "hi"},
    )
    assert parse_command_text("add demo.echo idempotency_key=123") == AddCommand(
        type_name="demo.echo", idempotency_key="123"
    )


def test_add_json_object_form() -> None:
    command = parse_command_text('add demo.echo {"text": "a b", "n": [1, 2]} priority=P2')
    assert command == AddCommand(
        type_name="demo.echo", input={"text": "a b", "n": [1, 2]}, priority=Priority.P2
    )


def test_add_json_object_is_always_input_and_merges_with_key_values() -> None:
    command = parse_command_text('add t {"priority": 3, "idempotency_key": "x"} priority=P1 more=1')
    assert isinstance(command, AddCommand)
    assert command.input == {"priority": 3, "idempotency_key": "x", "more": 1}
    assert command.priority is Priority.P1


def test_add_json_with_typographic_quotes() -> None:
    command = parse_command_text("add t {\u201ctext\u201d: \u201chi\u201d}")
    assert isinstance(command, AddCommand)
    assert command.input == {"text": "hi"}


def test_add_with_no_input_and_upper_case_verb() -> None:
    assert parse_command_text("ADD demo.triage") == AddCommand(type_name="demo.triage")


def test_new() -> None:
    assert parse_command_text("new") == NewCommand()
    assert parse_command_text("New demo.echo") == NewCommand(type_name="demo.echo")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list", ListCommand()),
        ("list mine", ListCommand(mine=True)),
        ("list MINE", ListCommand(mine=True)),
        ("list running", ListCommand(state=JobState.RUNNING)),
        ("list Waiting-Decision", ListCommand(state=JobState.WAITING_DECISION)),
        ("list needs_review", ListCommand(state=JobState.NEEDS_REVIEW)),
        ("list fast", ListCommand(lane="fast")),
        ("list state=dead", ListCommand(state=JobState.DEAD)),
        ("list lane=runing", ListCommand(lane="runing")),
    ],
)
def test_list(text: str, expected: ListCommand) -> None:
    assert parse_command_text(text) == expected


def test_job_verbs_accept_any_case_of_the_ref() -> None:
    assert parse_command_text("show Q-12") == ShowCommand(job_id=12)
    assert parse_command_text("show q-12") == ShowCommand(job_id=12)
    assert parse_command_text("SHOW 12") == ShowCommand(job_id=12)
    assert parse_command_text("retry q-3") == RetryCommand(job_id=3)
    assert parse_command_text("ack Q-4") == AckCommand(job_id=4)
    assert ShowCommand(job_id=12).ref == "Q-12"


def test_cancel_with_and_without_reason() -> None:
    assert parse_command_text("cancel q-2") == CancelCommand(job_id=2)
    assert parse_command_text("cancel Q-2   no longer   needed ") == CancelCommand(
        job_id=2, reason="no longer   needed"
    )
    assert parse_command_text('cancel Q-2 "don\'t need it"') == CancelCommand(
        job_id=2, reason="don't need it"
    )
    assert parse_command_text("cancel Q-2 it's done") == CancelCommand(job_id=2, reason="it's done")


def test_pause_and_resume_targets() -> None:
    assert parse_command_text("pause all") == PauseCommand(target="all", kind="all")
    assert parse_command_text("pause ALL") == PauseCommand(target="all", kind="all")
    assert parse_command_text("pause fast deploy freeze") == PauseCommand(
        target="fast", kind="name", reason="deploy freeze"
    )
    assert parse_command_text("pause demo.echo") == PauseCommand(target="demo.echo", kind="name")
    assert parse_command_text("pause q-7") == PauseCommand(target="Q-7", kind="job", job_id=7)
    assert parse_command_text("resume Q-7") == ResumeCommand(target="Q-7", kind="job", job_id=7)
    assert parse_command_text("resume all") == ResumeCommand(target="all", kind="all")
    assert parse_command_text("resume heavy") == ResumeCommand(target="heavy", kind="name")


def test_stats_help_and_empty_text() -> None:
    assert parse_command_text("stats") == StatsCommand()
    assert parse_command_text("help") == HelpCommand()
    assert parse_command_text("help CANCEL") == HelpCommand(topic="cancel")
    assert parse_command_text("") == HelpCommand()
    assert parse_command_text(" \n\t ") == HelpCommand()


def test_usage_has_one_line_per_verb() -> None:
    lines = USAGE.splitlines()
    assert len(lines) == len(VERBS)
    for verb, line in zip(VERBS, lines, strict=True):
        assert line.startswith(f"`/queue {verb}")
        assert len(line) <= 110


def test_parse_job_id() -> None:
    assert parse_job_id("Q-1") == 1
    assert parse_job_id("q-007") == 7
    with pytest.raises(CommandTextError):
        parse_job_id("D-1")


# ---- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lsit", "unknown command `lsit`; did you mean `list`?"),
        ("cancle Q-1", "unknown command `cancle`; did you mean `cancel`?"),
        ("xyzzy", "unknown command `xyzzy`"),
        ("Q-3", "unknown command `Q-3`; did you mean `show Q-3`?"),
        ("help ad", "`help`: unknown command `ad`; did you mean `add`?"),
    ],
)
def test_unknown_verbs(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("add", "`add` needs a job TYPE, e.g. `/queue add demo.echo text=hi`"),
        ("add text=hi", "`add` needs a job TYPE before its input, e.g. `/queue add demo.echo text=hi`"),
        (
            'add {"text": "hi"}',
            "`add` needs a job TYPE before its input, e.g. `/queue add demo.echo text=hi`",
        ),
        ("add demo/echo!", "`add`: `demo/echo!` is not a job type name (e.g. demo.echo)"),
        ("show", "`show` needs a job id (Q-N), e.g. `/queue show Q-12`"),
        ("retry", "`retry` needs a job id (Q-N), e.g. `/queue retry Q-12`"),
        ("ack", "`ack` needs a job id (Q-N), e.g. `/queue ack Q-12`"),
        ("cancel", "`cancel` needs a job id (Q-N), e.g. `/queue cancel Q-12 no longer needed`"),
        (
            "pause",
            "`pause` needs what to pause: `all`, a lane, a job type or a job Q-N, e.g. `/queue pause all`",
        ),
        (
            "resume",
            "`resume` needs what to resume: `all`, a lane, a job type or a job Q-N, e.g. `/queue resume all`",
        ),
    ],
)
def test_missing_arguments(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("show Q-1 Q-2", "`show` takes one job id (Q-N); unexpected `Q-2`"),
        ("retry Q-1 now", "`retry` takes one job id (Q-N); unexpected `now`"),
        ("ack Q-1 please", "`ack` takes one job id (Q-N); unexpected `please`"),
        ("stats now", "`stats` takes no arguments; unexpected `now`"),
        (
            "new demo.echo text=hi",
            "`new` takes at most a job TYPE (to give values too, use `add`); unexpected `text=hi`",
        ),
        ("list fast mine", "`list` takes at most one filter: a state, a lane or `mine`; unexpected `mine`"),
        ("resume all now", "`resume` takes one of `all`, a lane, a job type or a job Q-N; unexpected `now`"),
        ("help add list", "`help` takes at most one verb; unexpected `list`"),
    ],
)
def test_too_many_arguments(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("show Q-x", "`Q-x` is not a job id (expected Q-<number>, e.g. Q-12)"),
        ("show D-4", "`D-4` is not a job id (expected Q-<number>, e.g. Q-12)"),
        ("cancel Q-0", "`Q-0` is not a job id (expected Q-<number>, e.g. Q-12)"),
        (
            "ack Q-99999999999999999999",
            "`Q-99999999999999999999` is not a job id (expected Q-<number>, e.g. Q-12)",
        ),
        ("pause q-0", "`q-0` is not a job id (expected Q-<number>, e.g. Q-12)"),
        ("pause {fast}", "`pause`: `{fast}` is not `all`, a lane, a job type or a job Q-N"),
        ("resume 'fast'", "`resume`: `'fast'` is not `all`, a lane, a job type or a job Q-N"),
    ],
)
def test_bad_job_refs_and_targets(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("add t =x", "`add`: `=x` has no key before `=` (write key=value)"),
        (
            "add t text=hello world",
            '`add`: expected key=value, got `world` (to put spaces in a value, quote it: text="…")',
        ),
        ("add t hello", "`add`: expected key=value, got `hello`"),
        ('add t "a=b"', '`add`: expected key=value, got `"a=b"`'),
        ("add t 9lives=1", "`add`: `9lives` is not a field name (letters, digits, `_`, `-`, `.`)"),
        ("add t a=1 a=2", "`add`: `a` is given twice"),
        ('add t a=1 {"a": 2}', "`add`: `a` is given twice"),
        ("add t priority=P1 priority=P2", "`add`: `priority` is given twice"),
        ("add t priority=P5", "`add`: priority must be P0, P1 or P2, not `P5`"),
        ("add t idempotency_key=", "`add`: `idempotency_key=` needs a value"),
        ('add t text="hello', 'unclosed quote " in `text="hello`'),
        ("add t text='hello", "unclosed quote ' in `text='hello`"),
        ("add t a=[1, 2", "unclosed [ in `a=[1, 2`"),
        ('add t {"a": "b}', 'unclosed string in `{"a": "b}`'),
        ('add t {"a": }', 'the JSON input `{"a": }` is not valid: Expecting value at column 7'),
        ('add t {"a": 1} x', "`add`: expected key=value, got `x`"),
        (
            "add t {'a': 1}",
            "the JSON input `{'a': 1}` is not valid: "
            "Expecting property name enclosed in double quotes at column 2",
        ),
        ("add t [1, 2]", "`add`: the JSON input must be an object {…}, not `[1, 2]`"),
    ],
)
def test_bad_add_input(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "list runing",
            "`list`: `runing` is not a state; did you mean `running`? "
            "(for a lane of that name: `/queue list lane=runing`)",
        ),
        ("list state=runing", "`list`: `runing` is not a job state; did you mean `running`?"),
        ("list state=bogus", "`list`: `bogus` is not a job state; states are " + ", ".join(JobState)),
        ("list lane=", "`list`: `lane=` needs a lane name"),
        ("list owner=me", "`list` filters by `state=…` or `lane=…`, not `owner=`"),
    ],
)
def test_bad_list_filters(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_error_text_is_short_and_keeps_mrkdwn_intact() -> None:
    message = problem("add t `oops`" + "x" * 200)
    assert "`oops`" not in message
    assert len(message) < 120


# ---- Slack's escaping ---------------------------------------------------------------------------------


def test_html_entities_are_unescaped() -> None:
    command = parse_command_text("add t text=&lt;b&gt;&amp;&lt;/b&gt; q=&amp;lt;")
    assert isinstance(command, AddCommand)
    assert command.input == {"text": "<b>&</b>", "q": "&lt;"}


def test_links_become_their_url() -> None:
    command = parse_command_text(
        "add t a=<https://x.example/p?a=1&amp;b=2|x.example> b=<https://y.example> "
        "c=<mailto:ann@x.example|ann@x.example> d=<http://example.com|example.com>"
    )
    assert isinstance(command, AddCommand)
    assert command.input == {
        "a": "https://x.example/p?a=1&b=2",
        "b": "https://y.example",
        "c": "ann@x.example",
        "d": "http://example.com",
    }


def test_mentions_become_ids() -> None:
    command = parse_command_text(
        'add t owner=<@U123> by=<@W9ABC|ann> channel=<#C042|general> note="ask <@U123|bob> in <#C042>"'
    )
    assert isinstance(command, AddCommand)
    assert command.input == {"owner": "U123", "by": "W9ABC", "channel": "C042", "note": "ask U123 in C042"}


def test_special_mentions() -> None:
    assert (
        clean_slack_text("<!here> <!channel> <!subteam^S12|@ops> <!date^1|Jan 1>")
        == "@here @channel S12 Jan 1"
    )


def test_a_literal_mention_typed_by_a_person_stays_text() -> None:
    assert clean_slack_text("&lt;@U1&gt; <b> <@lowercase>") == "<@U1> <b> <@lowercase>"


def test_escaped_verbs_and_refs_work() -> None:
    assert parse_command_text("cancel Q-3 R&amp;D asked") == CancelCommand(job_id=3, reason="R&D asked")
    assert parse_command_text("pause <#C1|fast>") == PauseCommand(target="C1", kind="name")


# ---- property tests ----------------------------------------------------------------------------------


def test_deep_nesting_is_a_command_text_error_or_a_string() -> None:
    deep = "[" * 5000 + "]" * 5000
    command = parse_command_text(f"add t a={deep}")
    assert isinstance(command, AddCommand)
    with pytest.raises(CommandTextError):
        parse_command_text("add t {" + '"a":{' * 5000 + "}" * 5001)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True


def test_hypothesis_is_installed() -> None:
    if not HAVE_HYPOTHESIS:
        pytest.skip("hypothesis is not installed; the property tests below did not run")


if HAVE_HYPOTHESIS:
    _PIECES = st.sampled_from(
        [
            *VERBS,
            " ",
            "  ",
            "\n",
            "=",
            '"',
            "'",
            "\u201c",
            "\u201d",
            "\\",
            "[",
            "]",
            "{",
            "}",
            ":",
            ",",
            "Q-",
            "q-1",
            "0",
            "12",
            "2.5",
            "1e999",
            "null",
            "true",
            "<@U1|a>",
            "<#C1>",
            "<https://x|x>",
            "<",
            ">",
            "&amp;",
            "&lt;",
            "priority=",
            "idempotency_key=",
            "P0",
            "mine",
            "all",
            "state=",
            "lane=",
            "running",
            "text",
            "demo.echo",
        ]
    )
    _SLASH_TEXT = st.one_of(
        st.text(max_size=200), st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=30).map("".join)
    )

    @settings(max_examples=1500, deadline=None)
    @given(_SLASH_TEXT)
    def test_any_text_gives_a_command_or_a_command_text_error(text: str) -> None:
        try:
            command = parse_command_text(text)
        except CommandTextError as error:
            assert error.problem
            assert str(error).endswith(USAGE)
            return
        assert command.verb in VERBS

    _VALUES = st.text(st.characters(codec="utf-8", exclude_characters="<>&"), max_size=30)
    _KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
        lambda key: key not in ("priority", "idempotency_key")
    )

    @given(st.dictionaries(_KEYS, _VALUES, max_size=5))
    def test_quoted_values_round_trip_as_strings(values: dict[str, str]) -> None:
        def quote(value: str) -> str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

        text = "add t " + " ".join(f"{key}={quote(value)}" for key, value in values.items())
        command = parse_command_text(text)
        assert isinstance(command, AddCommand)
        assert command.input == values

    @given(st.integers(min_value=1, max_value=10**18 - 1), st.sampled_from(["Q-", "q-", ""]))
    def test_job_refs_round_trip(number: int, prefix: str) -> None:
        assert parse_command_text(f"show {prefix}{number}") == ShowCommand(job_id=number)
