"""Configuration: secrets and URLs from the environment, everything else from queuebot.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.durations import parse_duration_s
from store.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///queuebot.db"
DEFAULT_CONFIG_FILE = "queuebot.toml"

Seconds = Annotated[float, BeforeValidator(parse_duration_s)]
#: An interval that must not be zero (a zero poll or tick would spin, or be silently replaced).
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration_s), Field(gt=0)]


class Settings(BaseSettings):
    """The environment: where the database and Slack are, and which config file to read."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    queuebot_config: Path | None = None
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    port: int = 3000

    def __init__(self, **values: Any) -> None:
        """Read the environment; a malformed variable is a ConfigError naming it, not a traceback."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, env=True)) from None

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, url: str) -> str:
        try:
            make_url(url)
        except (ArgumentError, ValueError):
            shown = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)  # never echo a password
            raise ValueError(
                f"{shown!r} is not a database URL (e.g. sqlite:///queuebot.db or "
                "postgresql://user@host:5432/name)"
            ) from None
        return url


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetConfig(Strict):
    """Spend caps in USD as the agents report it; waiting costs nothing."""

    per_run_usd: float | None = Field(default=None, gt=0)
    per_job_usd: float | None = Field(default=None, gt=0)
    per_day_usd: float | None = Field(default=None, gt=0)


class LadderLevel(Strict):
    #: how long after the SLA this level is told
    after: Seconds = 0.0
    #: who is told: "owner", "backup", "channel", "admins", "group:NAME" or a user id
    notify: list[str] = Field(min_length=1)


class LadderConfig(Strict):
    levels: list[LadderLevel] = Field(min_length=1)
    repeat_every: PositiveSeconds | None = None

    @field_validator("levels")
    @classmethod
    def _levels_in_order(cls, levels: list[LadderLevel]) -> list[LadderLevel]:
        afters = [level.after for level in levels]
        if afters != sorted(afters):
            raise ValueError("levels must be listed in order of `after`")
        return levels


class AutoAnswerRule(Strict):
    """Answers low-risk decisions without a person; recorded as answered by `rule:NAME`."""

    name: str
    type: str = "*"  # job type, shell-style pattern
    key: str = "*"  # decision key, shell-style pattern
    max_risk: str = Field(default="low", pattern="^(low|medium)$")
    answer: str


class IdleConfig(Strict):
    """Enqueue a job (a planner that makes more work) when the queue has been idle this long."""

    job_type: str
    after: Seconds = 600.0
    input: dict[str, Any] = Field(default_factory=dict)


class WorkerConfig(Strict):
    #: how often a worker refreshes the heartbeat of its running jobs
    heartbeat_interval_s: PositiveSeconds = 2.0
    #: a running job whose heartbeat is older than this is an orphan and is reaped
    heartbeat_timeout_s: PositiveSeconds = 30.0
    #: the longest a worker sleeps before looking for work when nothing woke it
    poll_interval_s: PositiveSeconds = 1.0
    #: `work --until-idle` keeps going while a retry is due within this horizon
    idle_horizon_s: Seconds = 60.0


class SchedulerConfig(Strict):
    #: how often the time rules scan (reaper, timeouts, ladder, deadlines, retries, cron, idle)
    tick_s: PositiveSeconds = 1.0
    #: how often finished jobs past retention are pruned
    prune_every_s: PositiveSeconds = 3600.0
    #: how long finished jobs and their trail are kept
    retention: PositiveSeconds = 30 * 86400.0


def _default_ladders() -> dict[str, LadderConfig]:
    return {
        "default": LadderConfig(
            levels=[
                LadderLevel(after=0.0, notify=["owner"]),
                LadderLevel(after=900.0, notify=["backup"]),
                LadderLevel(after=1800.0, notify=["channel"]),
            ]
        )
    }


class Config(Strict):
    """queuebot.toml."""

    job_modules: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    default_channel: str | None = None
    backup: str | None = None
    lanes: dict[str, int] = Field(default_factory=lambda: {"fast": 8, "normal": 4, "heavy": 1})
    owners: dict[str, str] = Field(default_factory=dict)
    channels: dict[str, str] = Field(default_factory=dict)
    budgets: BudgetConfig = BudgetConfig()
    type_budgets: dict[str, BudgetConfig] = Field(default_factory=dict)
    ladders: dict[str, LadderConfig] = Field(default_factory=_default_ladders)
    type_ladders: dict[str, str] = Field(default_factory=dict)
    auto_answer: list[AutoAnswerRule] = Field(default_factory=list)
    idle: IdleConfig | None = None
    worker: WorkerConfig = WorkerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @field_validator("lanes")
    @classmethod
    def _positive_slots(cls, lanes: dict[str, int]) -> dict[str, int]:
        for name, slots in lanes.items():
            if slots < 1:
                raise ValueError(f"lane {name!r} needs at least 1 slot, not {slots}")
        return lanes

    @model_validator(mode="after")
    def _references_exist(self) -> Config:
        """A misspelt ladder or group name would otherwise escalate by the wrong ladder, or to nobody."""
        for job_type, ladder in self.type_ladders.items():
            if ladder not in self.ladders:
                known = ", ".join(sorted(self.ladders)) or "none"
                raise ValueError(
                    f"type_ladders.{job_type} names ladder {ladder!r}, which is not defined "
                    f"(ladders: {known})"
                )
        for name, ladder_config in self.ladders.items():
            for level in ladder_config.levels:
                for target in level.notify:
                    group = target.removeprefix("group:")
                    if target.startswith("group:") and group not in self.groups:
                        raise ValueError(f"ladders.{name} notifies {target!r}, but groups has no {group!r}")
        return self

    def ladder_for(self, job_type: str) -> LadderConfig:
        name = self.type_ladders.get(job_type, "default")
        return self.ladders.get(name) or next(iter(self.ladders.values()))


def _describe(error: ValidationError, *, env: bool = False) -> str:
    """One line naming each bad field: `ladders.default.levels.1.after: '15 minutes' is not a duration`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if env:
            where = f"environment variable {where.upper()}" if where else "environment"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_config(path: Path | None) -> Config:
    """Read and validate queuebot.toml; a missing default file means all defaults."""
    explicit = path is not None
    path = path or Path(DEFAULT_CONFIG_FILE)
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
