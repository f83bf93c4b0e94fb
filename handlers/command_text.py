"""Parse the text of the `/queue` slash command into typed commands. Pure: no Slack client, no database.

`parse_command_text(text)` returns one of the command dataclasses below, or raises `CommandTextError`, whose
message says what was wrong followed by `USAGE`. Verbs are case-insensitive; empty text means `help`. A job
id is `Q-12`, `q-12` or `12` (for `pause`/`resume` only `Q-N` is a job; a bare word is a lane or type).

Choices worth knowing:

* Slack text is decoded in Slack's documented order: control sequences first (`<@U1|bob>` → `U1`,
  `<#C1|general>` → `C1`, `<https://x|x>` → `https://x`, `<mailto:a@b.c|a@b.c>` → `a@b.c`, `<!here>` →
  `@here`), then `&amp;`, `&lt;`, `&gt;`. So a literal `<@U1>` that a person typed (sent as `&lt;@U1&gt;`)
  stays text instead of becoming a mention.
* `add TYPE key=value …`: a quoted value (`"…"`, `'…'`, or the typographic quotes phones type) is always a
  string. An unquoted value is parsed as JSON when it parses as a number, `true`/`false`, `null`, an array or
  an object (`seconds=2.5` → 2.5, `argv=["a", "b"]` → a list; brackets may hold spaces), else kept as a
  string; NaN and infinities stay strings. `AddCommand.raw_input` keeps each value's text for a handler
  that wants to retry a field as a string (`text=123` gives the int 123; `text="123"` the string).
* `key=` sets the empty string (as in a shell); `=x`, a word without `=`, a key that is not a field name and a
  key given twice are errors.
* Quotes open only at the start of a word or of a value, so apostrophes inside words (`text=don't`) are plain
  characters; backslash escapes only `"` and `\\` inside double quotes, and is literal elsewhere.
* Options: `priority=P0|P1|P2` (any case) and `idempotency_key=K` are taken out of key=value words; every
  other key is input. A bare JSON object word (`add TYPE {"text": "hi"}`) is always input and merges with any
  key=value words, so a type whose input has a field named `priority` or `idempotency_key` sets it that way.
* `list WORD`: `mine`, a job state (`waiting-decision` works too), else a lane: lanes are free text that the
  handler checks. A near miss of a state name (`runing`) is an error; `list state=X` / `list lane=X` say
  which is meant.
* `cancel Q-N reason…` and `pause TARGET reason…` take the rest of the text as the reason, as typed (one pair
  of surrounding quotes is dropped).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from store.states import JobState, Priority

USAGE_LINES: dict[str, str] = {
    "add": "`/queue add TYPE key=value …` or `add TYPE {json}` — add a job "
    "(`priority=P0`, `idempotency_key=K`)",
    "new": "`/queue new [TYPE]` — add a job with a form",
    "list": "`/queue list [STATE|LANE|mine]` — list jobs",
    "show": "`/queue show Q-N` — a job with its trail and decisions",
    "cancel": "`/queue cancel Q-N [reason…]` — cancel a job",
    "retry": "`/queue retry Q-N` — run a stopped job again",
    "pause": "`/queue pause all|LANE|TYPE|Q-N [reason…]` — hold work",
    "resume": "`/queue resume all|LANE|TYPE|Q-N` — let held work run again",
    "ack": "`/queue ack Q-N` — acknowledge an escalation",
    "stats": "`/queue stats` — counts by state, SLA breaches, spend",
    "help": "`/queue help [VERB]` — this help",
}
#: The verbs, in usage order.
VERBS: tuple[str, ...] = tuple(USAGE_LINES)
#: One line per verb, for an ephemeral reply (Slack mrkdwn).
USAGE = "\n".join(USAGE_LINES.values())

#: The `add` keys that are options rather than input.
PRIORITY_OPTION = "priority"
IDEMPOTENCY_OPTION = "idempotency_key"

_MAX_SHOWN = 40


class CommandTextError(ValueError):
    """The text is not a valid `/queue` command; `str()` is the problem, a blank line, then the usage."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.usage = USAGE
        super().__init__(f"{problem}\n\n*Usage*\n{USAGE}")


# ---- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddCommand:
    """`add TYPE key=value …`: enqueue a job (see `Engine.new_job`)."""

    verb: ClassVar[str] = "add"
    type_name: str
    input: dict[str, Any] = field(default_factory=dict)
    priority: Priority | None = None
    idempotency_key: str | None = None
    #: each key=value input's value as typed, before JSON inference
    raw_input: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCommand:
    """`new [TYPE]`: open the add-a-job modal."""

    verb: ClassVar[str] = "new"
    type_name: str | None = None


@dataclass(frozen=True)
class ListCommand:
    """`list [state|lane|mine]`: at most one filter is set."""

    verb: ClassVar[str] = "list"
    state: JobState | None = None
    #: free text; the handler checks it against the configured lanes
    lane: str | None = None
    mine: bool = False


@dataclass(frozen=True)
class _OnJob:
    job_id: int

    @property
    def ref(self) -> str:
        """The job as people write it, `Q-N`."""
        return f"Q-{self.job_id}"


@dataclass(frozen=True)
class ShowCommand(_OnJob):
    """`show Q-N`."""

    verb: ClassVar[str] = "show"


@dataclass(frozen=True)
class CancelCommand(_OnJob):
    """`cancel Q-N [reason…]`."""

    verb: ClassVar[str] = "cancel"
    reason: str | None = None


@dataclass(frozen=True)
class RetryCommand(_OnJob):
    """`retry Q-N`."""

    verb: ClassVar[str] = "retry"


@dataclass(frozen=True)
class AckCommand(_OnJob):
    """`ack Q-N`: stop a job's escalation ladder."""

    verb: ClassVar[str] = "ack"


TargetKind = Literal["all", "job", "name"]


@dataclass(frozen=True)
class _OnTarget:
    #: what `Engine.pause`/`Engine.resume` take: `all`, `Q-N`, or a lane or job type name
    target: str
    #: `name` is a lane or a job type; the engine tells which
    kind: TargetKind
    job_id: int | None = None


@dataclass(frozen=True)
class PauseCommand(_OnTarget):
    """`pause all|LANE|TYPE|Q-N [reason…]`."""

    verb: ClassVar[str] = "pause"
    reason: str | None = None


@dataclass(frozen=True)
class ResumeCommand(_OnTarget):
    """`resume all|LANE|TYPE|Q-N`."""

    verb: ClassVar[str] = "resume"


@dataclass(frozen=True)
class StatsCommand:
    """`stats`."""

    verb: ClassVar[str] = "stats"


@dataclass(frozen=True)
class HelpCommand:
    """`help [VERB]`, and empty text."""

    verb: ClassVar[str] = "help"
    #: a verb from VERBS, or None for all
    topic: str | None = None


Command = (
    AddCommand
    | NewCommand
    | ListCommand
    | ShowCommand
    | CancelCommand
    | RetryCommand
    | PauseCommand
    | ResumeCommand
    | StatsCommand
    | HelpCommand
    | AckCommand
)


# ---- Slack text ----------------------------------------------------------------------------------

_SLACK_SEQUENCE = re.compile(r"<([@#!]?[^<>|\s]+)(?:\|([^<>]*))?>")
_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S*")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}


def _decode_sequence(match: re.Match[str]) -> str:
    body, label = match.group(1), match.group(2)
    if body.startswith("@"):
        return body[1:] if _USER_ID.fullmatch(body[1:]) else match.group(0)
    if body.startswith("#"):
        return body[1:] if _CHANNEL_ID.fullmatch(body[1:]) else match.group(0)
    if body.startswith("!"):
        name, _, rest = body[1:].partition("^")
        if name in ("here", "channel", "everyone"):
            return f"@{name}"
        if name == "subteam" and rest:
            return rest
        return label if label is not None else match.group(0)
    if _URL.fullmatch(body):
        return body.removeprefix("mailto:") if body.lower().startswith("mailto:") else body
    return match.group(0)


def clean_slack_text(text: str) -> str:
    """Slack's escaped text as typed: mentions become ids, links their URL, then `&amp;` `&lt;` `&gt;`."""
    decoded = _SLACK_SEQUENCE.sub(_decode_sequence, text)
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], decoded)


# ---- words ---------------------------------------------------------------------------------------

#: a quote that opens a string, and the quotes that close it
_QUOTES: dict[str, str] = {'"': '"', "\u201c": '\u201d"', "'": "'", "\u2018": "\u2019"}
_DOUBLE_QUOTES = frozenset('"\u201c')
_CURLY = str.maketrans({"\u201c": '"', "\u201d": '"'})


def _shown(text: str) -> str:
    """Text for an error message: short, on one line, with no backticks to break the mrkdwn."""
    flat = " ".join(text.split()).replace("`", "'")
    return flat if len(flat) <= _MAX_SHOWN else flat[: _MAX_SHOWN - 1] + "…"


@dataclass(frozen=True)
class _Word:
    """One whitespace-separated word of `add`'s arguments."""

    source: str
    #: the text before the first unquoted `=`, or None when there is none
    key: str | None
    #: the text after that `=` (the whole word when there is no key), quotes removed
    value: str
    #: whether any of `value` was quoted
    quoted: bool


def _quoted(text: str, start: int, word_start: int) -> tuple[str, int]:
    """The string opened by the quote at `start`, and the index after its closing quote."""
    opener, closers = text[start], _QUOTES[text[start]]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch in closers:
            return "".join(out), i + 1
        if ch == "\\" and opener in _DOUBLE_QUOTES and i + 1 < len(text) and text[i + 1] in closers + "\\":
            ch = text[i + 1]
            i += 1
        out.append(ch)
        i += 1
    raise CommandTextError(f"unclosed quote {opener} in `{_shown(text[word_start:])}`")


def _bracketed(text: str, start: int, word_start: int) -> tuple[str, int]:
    """The JSON array or object starting at `start` (spaces allowed), and the index after it."""
    depth, in_string, i = 0, False, start
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1], i + 1
        i += 1
    what = "string" if in_string else text[start]
    raise CommandTextError(f"unclosed {what} in `{_shown(text[word_start:])}`")


def _words(text: str) -> list[_Word]:
    """Split `add`'s arguments into words, honouring quotes and JSON brackets at the start of a value."""
    words: list[_Word] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        word, i = _word(text, i)
        words.append(word)
    return words


def _word(text: str, start: int) -> tuple[_Word, int]:
    key: str | None = None
    parts: list[str] = []
    quoted, value_start, i = False, True, start
    while i < len(text) and not text[i].isspace():
        ch = text[i]
        if value_start and ch in _QUOTES:
            piece, i = _quoted(text, i, start)
            parts.append(piece)
            quoted = True
        elif value_start and ch in "[{":
            piece, i = _bracketed(text, i, start)
            parts.append(piece)
        elif ch == "=" and key is None:
            key, parts, quoted, value_start, i = "".join(parts), [], False, True, i + 1
            continue
        else:
            parts.append(ch)
            i += 1
        value_start = False
    return _Word(source=text[start:i], key=key, value="".join(parts), quoted=quoted), i


# ---- values --------------------------------------------------------------------------------------


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


def _no_constants(text: str) -> Any:
    raise ValueError(text)


def _loads(text: str) -> Any:
    """JSON with no NaN or infinities; typographic double quotes are tried as plain ones."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        straight = text.translate(_CURLY)
        if straight == text:
            raise
        return json.loads(straight, parse_float=_finite, parse_constant=_no_constants)


def infer_value(text: str) -> Any:
    """An unquoted value: its JSON meaning when it has one, else the text itself."""
    if not text or text[0] not in "-0123456789tfn[{":
        return text
    try:
        return _loads(text)
    except (ValueError, RecursionError):
        return text


def _json_object(word: _Word) -> dict[str, Any]:
    try:
        parsed = _loads(word.value)
    except json.JSONDecodeError as exc:
        raise CommandTextError(
            f"the JSON input `{_shown(word.value)}` is not valid: {exc.msg} at column {exc.colno}"
        ) from None
    except (ValueError, RecursionError):
        raise CommandTextError(f"the JSON input `{_shown(word.value)}` is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise CommandTextError(f"the JSON input must be an object, not `{_shown(word.value)}`")
    return parsed


# ---- job ids, names, states ----------------------------------------------------------------------

_JOB_ID = re.compile(r"(?:[Qq]-?)?0*(\d{1,18})")
_JOB_PREFIXED = re.compile(r"[Qq]-\d+")
_NAME = re.compile(r"[\w][\w.:/-]*")
_KEY = re.compile(r"[A-Za-z_][\w.-]*")


def parse_job_id(word: str) -> int:
    """`Q-12`, `q-12` or `12` → 12."""
    match = _JOB_ID.fullmatch(word)
    if match is None or int(match.group(1)) == 0:
        raise CommandTextError(f"`{_shown(word)}` is not a job id (expected Q-<number>, e.g. Q-12)")
    return int(match.group(1))


def _type_name(verb: str, word: str) -> str:
    if not _NAME.fullmatch(word):
        raise CommandTextError(f"`{verb}`: `{_shown(word)}` is not a job type name (e.g. demo.echo)")
    return word


def _state(word: str) -> JobState | None:
    normal = word.lower().replace("-", "_")
    return JobState(normal) if normal in JobState._value2member_map_ else None


def _state_names() -> list[str]:
    return [state.value for state in JobState]


def _close_state(word: str) -> str | None:
    close = difflib.get_close_matches(word.lower().replace("-", "_"), _state_names(), n=1, cutoff=0.8)
    return close[0] if close else None


# ---- verbs ---------------------------------------------------------------------------------------


def _too_many(verb: str, takes: str, extra: str) -> CommandTextError:
    return CommandTextError(f"`{verb}` takes {takes}; unexpected `{_shown(extra)}`")


def _missing(verb: str, what: str, example: str) -> CommandTextError:
    return CommandTextError(f"`{verb}` needs {what}, e.g. `/queue {verb} {example}`")


def _reason(text: str) -> str | None:
    reason = text.strip()
    if len(reason) >= 2 and reason[0] in _QUOTES and reason[-1] in _QUOTES[reason[0]]:
        reason = reason[1:-1].strip()
    return reason or None


class _AddBuilder:
    """Collects `add`'s words into input and options."""

    def __init__(self) -> None:
        self.input: dict[str, Any] = {}
        self.raw: dict[str, str] = {}
        self.priority: Priority | None = None
        self.key: str | None = None
        self.seen: set[str] = set()
        self.last_key: str | None = None

    def _claim(self, key: str, *, option: bool = False) -> None:
        slot = f"option {key}" if option else key
        if slot in self.seen:
            raise CommandTextError(f"`add`: `{_shown(key)}` is given twice")
        self.seen.add(slot)

    def word(self, word: _Word) -> None:
        if word.key is None:
            self._bare(word)
            return
        if not word.key:
            raise CommandTextError(f"`add`: `{_shown(word.source)}` has no key before `=` (write key=value)")
        if not _KEY.fullmatch(word.key):
            raise CommandTextError(
                f"`add`: `{_shown(word.key)}` is not a field name (letters, digits, `_`, `-`, `.`)"
            )
        option = word.key in (PRIORITY_OPTION, IDEMPOTENCY_OPTION)
        self._claim(word.key, option=option)
        self.last_key = word.key
        if word.key == PRIORITY_OPTION:
            try:
                self.priority = Priority(word.value.upper())
            except ValueError:
                raise CommandTextError(
                    f"`add`: priority must be P0, P1 or P2, not `{_shown(word.value)}`"
                ) from None
        elif word.key == IDEMPOTENCY_OPTION:
            if not word.value:
                raise CommandTextError("`add`: `idempotency_key=` needs a value")
            self.key = word.value
        else:
            self.input[word.key] = word.value if word.quoted else infer_value(word.value)
            self.raw[word.key] = word.value

    def _bare(self, word: _Word) -> None:
        if not word.quoted and word.value.startswith("["):
            raise CommandTextError(
                f"`add`: the JSON input must be an object {{…}}, not `{_shown(word.value)}`"
            )
        if word.quoted or not word.value.startswith("{"):
            hint = f' (to put spaces in a value, quote it: {self.last_key}="…")' if self.last_key else ""
            raise CommandTextError(f"`add`: expected key=value, got `{_shown(word.source)}`{hint}")
        for key, value in _json_object(word).items():
            self._claim(key)
            self.input[key] = value


def _parse_add(rest: str) -> AddCommand:
    words = _words(rest)
    example = "demo.echo text=hi"
    if not words:
        raise _missing("add", "a job TYPE", example)
    first = words[0]
    if first.key is not None or first.value.startswith(("{", "[")):
        raise CommandTextError(f"`add` needs a job TYPE before its input, e.g. `/queue add {example}`")
    type_name = _type_name("add", first.value)
    builder = _AddBuilder()
    for word in words[1:]:
        builder.word(word)
    return AddCommand(
        type_name=type_name,
        input=builder.input,
        priority=builder.priority,
        idempotency_key=builder.key,
        raw_input=builder.raw,
    )


def _parse_new(rest: str) -> NewCommand:
    args = rest.split()
    if len(args) > 1:
        raise _too_many("new", "at most a job TYPE (to give values too, use `add`)", " ".join(args[1:]))
    return NewCommand(type_name=_type_name("new", args[0]) if args else None)


def _parse_list(rest: str) -> ListCommand:
    args = rest.split()
    if len(args) > 1:
        raise _too_many("list", "at most one filter: a state, a lane or `mine`", " ".join(args[1:]))
    if not args:
        return ListCommand()
    word = args[0]
    if word.lower() == "mine":
        return ListCommand(mine=True)
    if "=" in word:
        return _explicit_list_filter(word)
    state = _state(word)
    if state is not None:
        return ListCommand(state=state)
    close = _close_state(word)
    if close is not None:
        raise CommandTextError(
            f"`list`: `{_shown(word)}` is not a state; did you mean `{close}`? "
            f"(for a lane of that name: `/queue list lane={_shown(word)}`)"
        )
    return ListCommand(lane=word)


def _explicit_list_filter(word: str) -> ListCommand:
    kind, _, value = word.partition("=")
    kind = kind.lower()
    if kind == "lane" and value:
        return ListCommand(lane=value)
    if kind == "state":
        state = _state(value)
        if state is not None:
            return ListCommand(state=state)
        close = _close_state(value)
        hint = f"did you mean `{close}`?" if close else "states are " + ", ".join(_state_names())
        raise CommandTextError(f"`list`: `{_shown(value)}` is not a job state; {hint}")
    if kind == "lane":
        raise CommandTextError("`list`: `lane=` needs a lane name")
    raise CommandTextError(f"`list` filters by `state=…` or `lane=…`, not `{_shown(kind)}=`")


def _job_only(verb: str, rest: str) -> int:
    args = rest.split()
    if not args:
        raise _missing(verb, "a job id (Q-N)", "Q-12")
    if len(args) > 1:
        raise _too_many(verb, "one job id (Q-N)", " ".join(args[1:]))
    return parse_job_id(args[0])


def _target(verb: str, word: str) -> _OnTarget:
    if word.lower() == "all":
        return _OnTarget(target="all", kind="all")
    if _JOB_PREFIXED.fullmatch(word):
        job_id = parse_job_id(word)
        return _OnTarget(target=f"Q-{job_id}", kind="job", job_id=job_id)
    if not _NAME.fullmatch(word):
        raise CommandTextError(f"`{verb}`: `{_shown(word)}` is not `all`, a lane, a job type or a job Q-N")
    return _OnTarget(target=word, kind="name")


def _parse_show(rest: str) -> ShowCommand:
    return ShowCommand(job_id=_job_only("show", rest))


def _parse_retry(rest: str) -> RetryCommand:
    return RetryCommand(job_id=_job_only("retry", rest))


def _parse_ack(rest: str) -> AckCommand:
    return AckCommand(job_id=_job_only("ack", rest))


def _parse_cancel(rest: str) -> CancelCommand:
    args = rest.split(maxsplit=1)
    if not args:
        raise _missing("cancel", "a job id (Q-N)", "Q-12 no longer needed")
    return CancelCommand(job_id=parse_job_id(args[0]), reason=_reason(args[1]) if len(args) > 1 else None)


def _parse_pause(rest: str) -> PauseCommand:
    args = rest.split(maxsplit=1)
    if not args:
        raise _missing("pause", "what to pause: `all`, a lane, a job type or a job Q-N", "all")
    target = _target("pause", args[0])
    reason = _reason(args[1]) if len(args) > 1 else None
    return PauseCommand(target=target.target, kind=target.kind, job_id=target.job_id, reason=reason)


def _parse_resume(rest: str) -> ResumeCommand:
    args = rest.split()
    if not args:
        raise _missing("resume", "what to resume: `all`, a lane, a job type or a job Q-N", "all")
    if len(args) > 1:
        raise _too_many("resume", "one of `all`, a lane, a job type or a job Q-N", " ".join(args[1:]))
    target = _target("resume", args[0])
    return ResumeCommand(target=target.target, kind=target.kind, job_id=target.job_id)


def _parse_stats(rest: str) -> StatsCommand:
    if rest.strip():
        raise _too_many("stats", "no arguments", rest)
    return StatsCommand()


def _parse_help(rest: str) -> HelpCommand:
    args = rest.split()
    if len(args) > 1:
        raise _too_many("help", "at most one verb", " ".join(args[1:]))
    if not args:
        return HelpCommand()
    topic = args[0].lower()
    if topic not in VERBS:
        raise _unknown_verb(args[0], "`help`: ")
    return HelpCommand(topic=topic)


_PARSERS: dict[str, Callable[[str], Command]] = {
    "add": _parse_add,
    "new": _parse_new,
    "list": _parse_list,
    "show": _parse_show,
    "cancel": _parse_cancel,
    "retry": _parse_retry,
    "pause": _parse_pause,
    "resume": _parse_resume,
    "ack": _parse_ack,
    "stats": _parse_stats,
    "help": _parse_help,
}


def _unknown_verb(word: str, prefix: str = "") -> CommandTextError:
    problem = f"{prefix}unknown command `{_shown(word)}`"
    if _JOB_PREFIXED.fullmatch(word):
        return CommandTextError(f"{problem}; did you mean `show {_shown(word)}`?")
    close = difflib.get_close_matches(word.lower(), VERBS, n=1, cutoff=0.6)
    if close:
        return CommandTextError(f"{problem}; did you mean `{close[0]}`?")
    return CommandTextError(problem)


def parse_command_text(text: str) -> Command:
    """The `/queue` command in Slack's `text`, or CommandTextError saying what is wrong (with usage)."""
    cleaned = clean_slack_text(text)
    parts = cleaned.split(maxsplit=1)
    if not parts:
        return HelpCommand()
    parser = _PARSERS.get(parts[0].lower())
    if parser is None:
        raise _unknown_verb(parts[0])
    return parser(parts[1] if len(parts) > 1 else "")
