"""queuebot.toml and the environment: defaults, a full file, and readable errors naming the bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import DEFAULT_DATABASE_URL, Config, Settings, load_config
from store.errors import ConfigError

FULL_CONFIG = """
job_modules = []
admins = ["UADMIN"]
default_channel = "C-ops"
backup = "UBACKUP"

[lanes]
fast = 3
heavy = 1

[groups]
oncall = ["U1", "U2"]

[owners]
"demo.echo" = "UOWNER"

[budgets]
per_run_usd = 0.5
per_day_usd = 20

[type_budgets."demo.echo"]
per_job_usd = 1.5

[ladders.default]
levels = [
  { after = "0s", notify = ["owner"] },
  { after = "15m", notify = ["backup", "group:oncall"] },
  { after = "2h", notify = ["channel"] },
]
repeat_every = "1h"

[ladders.urgent]
levels = [{ notify = ["admins"] }]

[type_ladders]
"demo.ask" = "urgent"

[[auto_answer]]
name = "low-risk-approve"
type = "demo.*"
key = "question"
answer = "approve"

[idle]
job_type = "demo.echo"
after = "10m"
input = { text = "idle" }

[worker]
poll_interval_s = "2s"
"""


def write_config(directory: Path, text: str) -> Path:
    path = directory / "queuebot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message, "a config error is one line"
    assert "queuebot.toml" in message, "a config error names the file"
    return message


def test_no_config_file_means_all_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config == Config()
    assert config.lanes == {"fast": 8, "normal": 4, "heavy": 1}
    assert config.admins == [] and config.auto_answer == [] and config.idle is None
    assert [level.after for level in config.ladder_for("anything").levels] == [0.0, 900.0, 1800.0]
    assert config.worker.poll_interval_s == 1.0 and config.scheduler.retention == 30 * 86400.0


def test_queuebot_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "admins = ['U9']\n[lanes]\nfast = 2\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.admins == ["U9"] and config.lanes == {"fast": 2}


def test_an_explicit_config_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_full_config_parses_lanes_people_ladders_budgets_rules_and_durations(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, FULL_CONFIG))
    assert config.lanes == {"fast": 3, "heavy": 1}
    assert config.admins == ["UADMIN"] and config.groups == {"oncall": ["U1", "U2"]}
    assert config.backup == "UBACKUP" and config.default_channel == "C-ops"
    assert config.owners == {"demo.echo": "UOWNER"}
    assert config.budgets.per_run_usd == 0.5 and config.budgets.per_day_usd == 20
    assert config.budgets.per_job_usd is None
    assert config.type_budgets["demo.echo"].per_job_usd == 1.5
    default = config.ladder_for("demo.echo")
    assert [level.after for level in default.levels] == [0.0, 900.0, 7200.0]
    assert default.levels[1].notify == ["backup", "group:oncall"]
    assert default.repeat_every == 3600.0
    assert config.ladder_for("demo.ask").levels[0].notify == ["admins"]
    [rule] = config.auto_answer
    assert (rule.name, rule.type, rule.key, rule.max_risk, rule.answer) == (
        "low-risk-approve",
        "demo.*",
        "question",
        "low",
        "approve",
    )
    assert config.idle is not None and config.idle.after == 600.0 and config.idle.input == {"text": "idle"}
    assert config.worker.poll_interval_s == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[lanes]\nfast = 2\n[worker]\npoll_interval_s = 0.25\n", 0.25),
        ('[worker]\npoll_interval_s = "90s"\n', 90.0),
        ('[worker]\npoll_interval_s = "1.5m"\n', 90.0),
        ('[worker]\npoll_interval_s = "1d"\n', 86400.0),
    ],
    ids=["number", "seconds", "fractional-minutes", "days"],
)
def test_durations_accept_numbers_and_unit_strings(tmp_path: Path, text: str, expected: float) -> None:
    assert load_config(write_config(tmp_path, text)).worker.poll_interval_s == expected


def test_bad_duration_error_names_the_field_and_the_accepted_forms(tmp_path: Path) -> None:
    text = FULL_CONFIG.replace('poll_interval_s = "2s"', 'poll_interval_s = "500ms"')
    message = config_error(tmp_path, text)
    assert "worker.poll_interval_s" in message
    assert "'500ms' is not a duration" in message and "15m" in message


def test_bad_duration_inside_a_ladder_level_names_its_position(tmp_path: Path) -> None:
    text = (
        '[ladders.default]\nlevels = [{ after = "0s", notify = ["owner"] }, '
        '{ after = "soon", notify = ["x"] }]\n'
    )
    message = config_error(tmp_path, text)
    assert "ladders.default.levels.1.after" in message and "'soon'" in message


def test_zero_interval_is_refused_rather_than_spinning(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[scheduler]\ntick_s = 0\n")
    assert "scheduler.tick_s" in message and "greater than 0" in message


def test_misspelt_top_level_key_is_named_as_unknown(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'admin = ["U1"]\n')
    assert "admin: unknown setting" in message


def test_misspelt_nested_key_is_named_with_its_section(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[worker]\npoll_interval = 1\n")
    assert "worker.poll_interval: unknown setting" in message


def test_zero_slot_lane_is_refused_naming_the_lane(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[lanes]\nfast = 2\nheavy = 0\n")
    assert "lanes" in message and "'heavy' needs at least 1 slot" in message


def test_ladder_levels_out_of_order_are_refused(tmp_path: Path) -> None:
    text = (
        '[ladders.default]\nlevels = [{ after = "30m", notify = ["owner"] }, '
        '{ after = "15m", notify = ["backup"] }]\n'
    )
    message = config_error(tmp_path, text)
    assert "ladders.default.levels" in message and "in order of `after`" in message


def test_ladder_level_without_anyone_to_notify_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[ladders.default]\nlevels = [{ after = "1m", notify = [] }]\n')
    assert "ladders.default.levels.0.notify" in message


def test_type_ladder_naming_an_undefined_ladder_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[type_ladders]\n"demo.ask" = "urgnet"\n')
    assert "type_ladders.demo.ask" in message and "'urgnet'" in message and "default" in message


def test_ladder_notifying_an_undefined_group_is_refused(tmp_path: Path) -> None:
    text = '[ladders.default]\nlevels = [{ notify = ["group:oncal"] }]\n[groups]\noncall = ["U1"]\n'
    message = config_error(tmp_path, text)
    assert "'group:oncal'" in message and "ladders.default" in message


def test_negative_budget_is_refused_naming_the_budget(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[budgets]\nper_day_usd = -5\n")
    assert "budgets.per_day_usd" in message


def test_auto_answer_rule_above_medium_risk_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[[auto_answer]]\nname = "r"\nanswer = "approve"\nmax_risk = "high"\n')
    assert "auto_answer.0.max_risk" in message


def test_invalid_toml_is_a_config_error_with_the_position(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[lanes]\nfast = \n")
    assert "is not valid TOML" in message and "line 2" in message


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "queuebot.toml"
    path.write_bytes(b"admins = ['\xff']\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_settings_read_database_url_and_config_path_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@db.example:5432/queue")
    monkeypatch.setenv("QUEUEBOT_CONFIG", "/etc/queuebot/queuebot.toml")
    settings = Settings()
    assert settings.database_url == "postgresql://postgres@db.example:5432/queue"
    assert settings.queuebot_config == Path("/etc/queuebot/queuebot.toml")


def test_settings_default_to_a_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("QUEUEBOT_CONFIG", raising=False)
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///queuebot.db"
    assert settings.queuebot_config is None


def test_malformed_environment_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError, match="environment variable PORT"):
        Settings()


def test_unparsable_database_url_is_refused_without_echoing_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://me:hunter2@db:notaport/queue")
    with pytest.raises(ConfigError, match="environment variable DATABASE_URL") as caught:
        Settings()
    assert "hunter2" not in str(caught.value)
