"""The database schema, as SQLAlchemy Core tables. Alembic migrations in store/migrations mirror it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from store.states import TERMINAL_STATES, JobState


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Stores naive UTC in the database and hands back timezone-aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite rows from text() queries
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


Json = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_terminal = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATES))
OPEN_CLAUSE = f"state NOT IN ({_terminal})"
TERMINAL_CLAUSE = f"state IN ({_terminal})"


def _partial(where: str) -> dict[str, Any]:
    """The same partial-index predicate for both dialects."""
    return {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}


metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("lane", sa.String(64), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("input", Json, nullable=False),
    sa.Column("owner", sa.String(64)),
    sa.Column("channel", sa.String(64)),
    sa.Column("idempotency_key", sa.String(500)),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    # Incremented on every claim: a worker's writes must name the run they belong to (a fencing token).
    sa.Column("run_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime),
    sa.Column("heartbeat_at", UtcDateTime),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("deadline_at", UtcDateTime),
    sa.Column("sla_at", UtcDateTime),
    sa.Column("sla_level", sa.Integer, nullable=False, server_default="0"),
    # When the escalation ladder next needs a look; NULL once acknowledged, finished or past its last level.
    sa.Column("sla_next_at", UtcDateTime),
    sa.Column("acknowledged_at", UtcDateTime),
    sa.Column("acknowledged_by", sa.String(64)),
    sa.Column("spend_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("budget_usd", sa.Float),
    sa.Column("parent_id", Id),
    sa.Column("result", Json),
    sa.Column("reason", sa.Text),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("feedback", Json),
    sa.Column("finished_at", UtcDateTime),
    sqlite_autoincrement=True,  # ids are shown as Q-N: never reuse one after pruning
)
sa.Index(
    "ix_jobs_claimable",
    jobs.c.lane,
    jobs.c.priority,
    jobs.c.run_after,
    jobs.c.id,
    **_partial(f"state = '{JobState.READY.value}'"),
)
sa.Index(
    "ux_jobs_idempotency_key",
    jobs.c.idempotency_key,
    unique=True,
    **_partial("idempotency_key IS NOT NULL"),
)
sa.Index("ix_jobs_running_heartbeat", jobs.c.heartbeat_at, **_partial(f"state = '{JobState.RUNNING.value}'"))
sa.Index("ix_jobs_retry_due", jobs.c.run_after, **_partial(f"state = '{JobState.RETRY_SCHEDULED.value}'"))
sa.Index(
    "ix_jobs_open_deadline", jobs.c.deadline_at, **_partial(f"deadline_at IS NOT NULL AND {OPEN_CLAUSE}")
)
sa.Index("ix_jobs_sla_next", jobs.c.sla_next_at, **_partial("sla_next_at IS NOT NULL"))
sa.Index("ix_jobs_open_sla", jobs.c.sla_at, **_partial(f"sla_at IS NOT NULL AND {OPEN_CLAUSE}"))
sa.Index("ix_jobs_open_state", jobs.c.state, jobs.c.lane, jobs.c.created_at, **_partial(OPEN_CLAUSE))
sa.Index("ix_jobs_finished", jobs.c.finished_at, **_partial(TERMINAL_CLAUSE))
sa.Index("ix_jobs_parent", jobs.c.parent_id, **_partial("parent_id IS NOT NULL"))

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("options", Json, nullable=False),
    sa.Column("allow_other", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("default", sa.Text),
    sa.Column("risk", sa.String(16)),
    sa.Column("answerers", Json, nullable=False),
    sa.Column("details", Json),
    sa.Column("quorum", sa.Integer, nullable=False, server_default="1"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("answer", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("answered_by", sa.String(200)),
    sa.Column("answer_source", sa.String(32)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("timeout_at", UtcDateTime, nullable=False),
    sa.Column("answered_at", UtcDateTime),
    sa.Column("channel", sa.String(64)),
    sa.Column("message_ts", sa.String(64)),
    sa.UniqueConstraint("job_id", "key", name="uq_decisions_job_key"),
    sqlite_autoincrement=True,
)
sa.Index("ix_decisions_open_timeout", decisions.c.timeout_at, **_partial("state = 'open'"))
sa.Index("ix_decisions_job", decisions.c.job_id)

decision_votes = sa.Table(
    "decision_votes",
    metadata,
    sa.Column("decision_id", Id, sa.ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("voter", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, nullable=False),
    sa.Column("decision_id", Id),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("from_state", sa.String(32)),
    sa.Column("to_state", sa.String(32)),
    sa.Column("reason", sa.Text),
    sa.Column("details", Json),
)
sa.Index("ix_events_job", events.c.job_id, events.c.id)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(500), nullable=False, unique=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("job_id", Id),
    sa.Column("decision_id", Id),
    sa.Column("target", sa.String(64)),
    sa.Column("payload", Json, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime),
    sa.Column("response", Json),
    sa.Column("error", sa.Text),
)
sa.Index("ix_outbox_pending", outbox.c.next_attempt_at, outbox.c.id, **_partial("state = 'pending'"))

markers = sa.Table(
    "markers",
    metadata,
    sa.Column("job_id", Id, primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", Json),
    sa.Column("at", UtcDateTime, nullable=False),
)

pauses = sa.Table(
    "pauses",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),  # all | lane | type
    sa.Column("name", sa.String(200), primary_key=True),  # '' for all
    sa.Column("paused_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at", UtcDateTime, nullable=False),
)

lane_cooldowns = sa.Table(
    "lane_cooldowns",
    metadata,
    sa.Column("lane", sa.String(64), primary_key=True),
    sa.Column("until", UtcDateTime, nullable=False),
)

# Finished jobs counted by the UTC day they finished, lane and terminal state, so the board reads history from
# a few rows (store/counts.py keeps them in step with every move into or out of a terminal state).
finished_counts = sa.Table(
    "finished_counts",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("lane", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(32), primary_key=True),
    sa.Column("jobs", sa.BigInteger, nullable=False),
)

daily_spend = sa.Table(
    "daily_spend",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("type", sa.String(200), primary_key=True),  # '*' is the total over all types
    sa.Column("usd", sa.Float, nullable=False),
)
