"""The real `queuebot` executable, run as a user runs it, on a SQLite file and on a PostgreSQL database.

Each command is a subprocess (about half a second each), so the flows below are few and each covers a
whole path through the states with the fixed output shapes that outside checks rely on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

QUEUEBOT = Path(sys.executable).parent / "queuebot"
PG_ADMIN_URL = os.environ.get("QUEUEBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
UNREACHABLE_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/x"
#: Far above what any command here needs (about a second), so hitting it means a hang.
COMMAND_TIMEOUT_S = 30
#: Workers that poll and tick quickly so `work --until-idle` returns soon after the queue settles.
FAST_CONFIG = """
[worker]
poll_interval_s = 0.05
heartbeat_interval_s = 0.2

[scheduler]
tick_s = 0.1
"""


class Queuebot:
    """Runs `queuebot …` in a directory of its own against one database."""

    def __init__(self, cwd: Path, database_url: str) -> None:
        self.cwd = cwd
        self.database_url = database_url

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {
            name: value
            for name, value in os.environ.items()
            if name not in ("DATABASE_URL", "QUEUEBOT_CONFIG")
        }
        environ["DATABASE_URL"] = self.database_url
        environ.update(env or {})
        try:
            return subprocess.run(
                [str(QUEUEBOT), *args],
                cwd=self.cwd,
                env=environ,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(
                f"queuebot {' '.join(args)} did not return within {COMMAND_TIMEOUT_S} s; "
                f"stderr: {(stderr or '')[-2000:]}"
            )

    def ok(self, *args: str) -> str:
        """Stdout of a command that must succeed."""
        result = self.run(*args)
        assert result.returncode == 0, f"queuebot {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, env: dict[str, str] | None = None) -> str:
        """The one-line error of a command that must fail cleanly."""
        result = self.run(*args, env=env)
        assert result.returncode != 0, f"queuebot {' '.join(args)} succeeded: {result.stdout}"
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
        assert result.stdout == "", "a failed command prints nothing on stdout"
        return lines[0]

    def enqueue(self, job_type: str, data: dict[str, Any], *options: str) -> str:
        stdout = self.ok("enqueue", job_type, "--input", json.dumps(data), *options)
        return stdout.strip()

    def job_count(self) -> int:
        return sum(self.json("status")["states"].values())


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A temporary SQLite file, or a PostgreSQL database created for this test and dropped after."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'queuebot.db'}"
        return
    name = f"queuebot_cli_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is unreachable under CI at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def queuebot(tmp_path: Path, database_url: str) -> Queuebot:
    """The CLI on each database, run from a directory holding only a fast-polling queuebot.toml."""
    (tmp_path / "queuebot.toml").write_text(FAST_CONFIG, encoding="utf-8")
    return Queuebot(tmp_path, database_url)


@pytest.fixture
def sqlite_queuebot(tmp_path: Path) -> Queuebot:
    """The CLI on a SQLite file only: for the commands whose store paths the store tests cover on both."""
    (tmp_path / "queuebot.toml").write_text(FAST_CONFIG, encoding="utf-8")
    return Queuebot(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'queuebot.db'}")


def event_kinds(view: dict[str, Any]) -> list[str]:
    return [event["kind"] for event in view["events"]]


# ---- the happy paths, on both databases -------------------------------------------------------------


def test_echo_is_enqueued_worked_and_shown_completed_with_its_trail(queuebot: Queuebot) -> None:
    (queuebot.cwd / "queuebot.toml").unlink()  # migrate and enqueue need no config file at all
    assert queuebot.ok("migrate").strip() == "database is up to date"
    enqueue = ("enqueue", "demo.echo", "--input", '{"text":"hi"}', "--key", "k-1")
    assert queuebot.ok(*enqueue) == "Q-1\n"
    again = queuebot.run(*enqueue)
    assert (again.returncode, again.stdout) == (0, "Q-1\n"), "the same key returns the same job"
    assert "already had Q-1" in again.stderr

    (queuebot.cwd / "queuebot.toml").write_text(FAST_CONFIG, encoding="utf-8")
    assert queuebot.run("work", "--until-idle").returncode == 0

    view = queuebot.json("show", "Q-1")
    assert (view["id"], view["type"]) == ("Q-1", "demo.echo")
    assert (view["state"], view["result"]) == ("completed", "hi")
    assert view["decisions"] == []
    assert event_kinds(view) == ["enqueued", "claimed", "evidence", "completed"]
    assert all(isinstance(event["actor"], str) and event["actor"] for event in view["events"])
    assert view["events"][0]["actor"] == "cli"
    times = [datetime.fromisoformat(event["at"]) for event in view["events"]]
    assert times == sorted(times), "events are listed oldest first"

    states = queuebot.json("status")["states"]
    assert states["completed"] == 1 and sum(states.values()) == 1, "the keyed job was written once"
    assert {"ready", "running", "waiting_decision", "dead", "cancelled"} <= set(states)


def test_ask_waits_for_a_cli_answer_then_completes_with_it(queuebot: Queuebot) -> None:
    job = queuebot.enqueue("demo.ask", {"question": "ship it?"})
    queuebot.ok("work", "--until-idle")  # returns although the job waits for a person
    assert queuebot.json("show", job)["state"] == "waiting_decision"

    answered = queuebot.ok("answer", "D-1", "approve", "--as", "U1")
    assert answered.strip() == f"D-1 answered approve; {job} is ready"
    late = queuebot.fails("answer", "D-1", "deny", "--as", "U2")
    assert "already answered by U1 with approve" in late

    queuebot.ok("work", "--until-idle")
    view = queuebot.json("show", job)
    assert (view["state"], view["result"]) == ("completed", "approve"), "the late answer changed nothing"
    [decision] = view["decisions"]
    assert decision["id"] == "D-1" and decision["options"] == ["approve", "deny"]
    assert (decision["state"], decision["answer"], decision["answered_by"]) == ("answered", "approve", "U1")


# ---- the rest of the commands, on SQLite (the store tests cover both databases) -------------------------


def test_cancelled_job_can_be_retried_and_then_completes(sqlite_queuebot: Queuebot) -> None:
    queuebot = sqlite_queuebot
    job = queuebot.enqueue("demo.echo", {"text": "again"})
    assert queuebot.ok("cancel", job).strip() == f"{job} cancelled"
    assert queuebot.ok("retry", job).strip() == f"{job} is ready again"
    queuebot.ok("work", "--until-idle")

    view = queuebot.json("show", job)
    assert (view["state"], view["result"]) == ("completed", "again")
    kinds = event_kinds(view)
    assert kinds.index("cancelled") < kinds.index("requeued") < kinds.index("completed")


def test_pause_all_holds_new_jobs_even_from_workers_until_resume_all(sqlite_queuebot: Queuebot) -> None:
    queuebot = sqlite_queuebot
    assert queuebot.ok("pause", "all").startswith("paused all")
    job = queuebot.enqueue("demo.echo", {"text": "held"})
    queuebot.ok("work", "--until-idle")  # a paused job is not work: this returns without running it
    assert queuebot.ok("resume", "all").strip() == "resumed all (1 jobs ready again)"
    queuebot.ok("work", "--until-idle")

    view = queuebot.json("show", job)
    assert (view["state"], view["result"]) == ("completed", "held")
    assert view["events"][0]["to"] == "paused", "a job enqueued while paused starts paused"
    kinds = event_kinds(view)
    assert kinds[:3] == ["enqueued", "resumed", "claimed"], "no worker claimed it while paused"


def test_flaky_job_fails_transiently_twice_then_completes(sqlite_queuebot: Queuebot) -> None:
    queuebot = sqlite_queuebot
    job = queuebot.enqueue("demo.flaky", {"fail_times": 2})
    queuebot.ok("work", "--until-idle")  # waits through the retries, which are due within seconds

    view = queuebot.json("show", job)
    assert (view["state"], view["result"]) == ("completed", {"attempts": 3})
    assert event_kinds(view).count("claimed") == 3


# ---- errors: one line on stderr, non-zero exit, nothing written ----------------------------------------


def test_rejected_enqueues_are_one_line_naming_the_cause_and_write_no_job(sqlite_queuebot: Queuebot) -> None:
    unknown = sqlite_queuebot.fails("enqueue", "demo.nope", "--input", "{}")
    assert "unknown job type 'demo.nope'" in unknown and "demo.echo" in unknown
    invalid = sqlite_queuebot.fails("enqueue", "demo.flaky", "--input", '{"fail_times": "often"}')
    assert "input for demo.flaky: fail_times: Input should be a valid integer" in invalid
    malformed = sqlite_queuebot.fails("enqueue", "demo.echo", "--input", '{"text": "hi"')
    assert "input is not valid JSON" in malformed
    assert sqlite_queuebot.job_count() == 0


def test_unknown_job_id_is_one_line_error(sqlite_queuebot: Queuebot) -> None:
    assert "no job Q-999" in sqlite_queuebot.fails("show", "Q-999")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[lanes]\nfast = \n", "queuebot.toml is not valid TOML"),
        ("[worker]\npoll_intervl_s = 1\n", "queuebot.toml: worker.poll_intervl_s: unknown setting"),
    ],
    ids=["invalid-toml", "misspelt-key"],
)
def test_malformed_queuebot_toml_is_one_line_error_naming_it(
    sqlite_queuebot: Queuebot, config: str, expected: str
) -> None:
    (sqlite_queuebot.cwd / "queuebot.toml").write_text(config, encoding="utf-8")
    assert expected in sqlite_queuebot.fails("enqueue", "demo.echo", "--input", '{"text":"hi"}')


def test_unreachable_database_is_one_line_error_naming_it(sqlite_queuebot: Queuebot) -> None:
    message = sqlite_queuebot.fails(
        "enqueue", "demo.echo", "--input", '{"text":"hi"}', env={"DATABASE_URL": UNREACHABLE_DATABASE_URL}
    )
    assert "cannot use the database at postgresql://postgres@127.0.0.1:1/x" in message


def test_unparsable_database_url_is_one_line_error_hiding_the_password(sqlite_queuebot: Queuebot) -> None:
    message = sqlite_queuebot.fails("status", env={"DATABASE_URL": "postgresql://me:hunter2@db:port/x"})
    assert "DATABASE_URL" in message and "hunter2" not in message


def test_invalid_option_is_one_line_usage_error_pointing_at_help(sqlite_queuebot: Queuebot) -> None:
    message = sqlite_queuebot.fails("enqueue", "demo.echo", "--input", "{}", "--priority", "P9")
    assert "'P9' is not one of 'P0', 'P1', 'P2'" in message and "queuebot enqueue --help" in message
