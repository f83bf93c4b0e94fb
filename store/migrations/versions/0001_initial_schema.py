"""Initial schema: jobs, decisions, votes, events, outbox, markers, pauses, cooldowns, spend.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_spend",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", "type"),
    )
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("decision_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=True),
        sa.Column("to_state", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_job", ["job_id", "id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("input", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=500), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_after", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("deadline_at", sa.DateTime(), nullable=True),
        sa.Column("sla_at", sa.DateTime(), nullable=True),
        sa.Column("sla_level", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sla_next_at", sa.DateTime(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("spend_usd", sa.Float(), server_default="0", nullable=False),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failure_class", sa.String(length=32), nullable=True),
        sa.Column("feedback", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_claimable",
            ["lane", "priority", "run_after", "id"],
            unique=False,
            sqlite_where=sa.text("state = 'ready'"),
            postgresql_where=sa.text("state = 'ready'"),
        )
        batch_op.create_index(
            "ix_jobs_finished",
            ["finished_at"],
            unique=False,
            sqlite_where=sa.text("state IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
            postgresql_where=sa.text("state IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
        )
        batch_op.create_index(
            "ix_jobs_open_deadline",
            ["deadline_at"],
            unique=False,
            sqlite_where=sa.text(
                "deadline_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
            postgresql_where=sa.text(
                "deadline_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.create_index(
            "ix_jobs_open_sla",
            ["sla_at"],
            unique=False,
            sqlite_where=sa.text(
                "sla_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
            postgresql_where=sa.text(
                "sla_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.create_index(
            "ix_jobs_sla_next",
            ["sla_next_at"],
            unique=False,
            sqlite_where=sa.text("sla_next_at IS NOT NULL"),
            postgresql_where=sa.text("sla_next_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_jobs_open_state",
            ["state", "lane", "created_at"],
            unique=False,
            sqlite_where=sa.text("state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
            postgresql_where=sa.text(
                "state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.create_index(
            "ix_jobs_parent",
            ["parent_id"],
            unique=False,
            sqlite_where=sa.text("parent_id IS NOT NULL"),
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_jobs_retry_due",
            ["run_after"],
            unique=False,
            sqlite_where=sa.text("state = 'retry_scheduled'"),
            postgresql_where=sa.text("state = 'retry_scheduled'"),
        )
        batch_op.create_index(
            "ix_jobs_running_heartbeat",
            ["heartbeat_at"],
            unique=False,
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )
        batch_op.create_index(
            "ux_jobs_idempotency_key",
            ["idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "lane_cooldowns",
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("lane"),
    )
    op.create_table(
        "markers",
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "key"),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("dedup_key", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("decision_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("response", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_pending",
            ["next_attempt_at", "id"],
            unique=False,
            sqlite_where=sa.text("state = 'pending'"),
            postgresql_where=sa.text("state = 'pending'"),
        )

    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("paused_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "name"),
    )
    op.create_table(
        "decisions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("allow_other", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("default", sa.Text(), nullable=True),
        sa.Column("risk", sa.String(length=16), nullable=True),
        sa.Column("answerers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("quorum", sa.Integer(), server_default="1", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(length=200), nullable=True),
        sa.Column("answer_source", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("timeout_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("message_ts", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "key", name="uq_decisions_job_key"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_job", ["job_id"], unique=False)
        batch_op.create_index(
            "ix_decisions_open_timeout",
            ["timeout_at"],
            unique=False,
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "decision_votes",
        sa.Column("decision_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("voter", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("decision_id", "voter"),
    )


def downgrade() -> None:
    op.drop_table("decision_votes")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_decisions_open_timeout",
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index("ix_decisions_job")

    op.drop_table("decisions")
    op.drop_table("pauses")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_pending",
            sqlite_where=sa.text("state = 'pending'"),
            postgresql_where=sa.text("state = 'pending'"),
        )

    op.drop_table("outbox")
    op.drop_table("markers")
    op.drop_table("lane_cooldowns")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_jobs_idempotency_key",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_running_heartbeat",
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index(
            "ix_jobs_retry_due",
            sqlite_where=sa.text("state = 'retry_scheduled'"),
            postgresql_where=sa.text("state = 'retry_scheduled'"),
        )
        batch_op.drop_index(
            "ix_jobs_parent",
            sqlite_where=sa.text("parent_id IS NOT NULL"),
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_open_state",
            sqlite_where=sa.text("state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
            postgresql_where=sa.text(
                "state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.drop_index(
            "ix_jobs_sla_next",
            sqlite_where=sa.text("sla_next_at IS NOT NULL"),
            postgresql_where=sa.text("sla_next_at IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_open_sla",
            sqlite_where=sa.text(
                "sla_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
            postgresql_where=sa.text(
                "sla_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.drop_index(
            "ix_jobs_open_deadline",
            sqlite_where=sa.text(
                "deadline_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
            postgresql_where=sa.text(
                "deadline_at IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"
            ),
        )
        batch_op.drop_index(
            "ix_jobs_finished",
            sqlite_where=sa.text("state IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
            postgresql_where=sa.text("state IN ('cancelled', 'completed', 'dead', 'expired', 'rejected')"),
        )
        batch_op.drop_index(
            "ix_jobs_claimable",
            sqlite_where=sa.text("state = 'ready'"),
            postgresql_where=sa.text("state = 'ready'"),
        )

    op.drop_table("jobs")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_job")

    op.drop_table("events")
    op.drop_table("daily_spend")
