"""Finished jobs counted per day, lane and state, so board counts no longer scan history.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TERMINAL = "('cancelled', 'completed', 'dead', 'expired', 'rejected')"


def upgrade() -> None:
    op.create_table(
        "finished_counts",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "lane", "state"),
    )
    # Count the jobs already finished (SQLite keeps datetimes as 'YYYY-MM-DD HH:MM:SS…' text).
    bind = op.get_bind()
    finished = "COALESCE(finished_at, updated_at)"
    day = (
        f"to_char({finished}, 'YYYY-MM-DD')"
        if bind.dialect.name == "postgresql"
        else f"substr({finished}, 1, 10)"
    )
    op.execute(
        f"INSERT INTO finished_counts (day, lane, state, jobs) "
        f"SELECT {day}, lane, state, count(*) FROM jobs WHERE state IN {_TERMINAL} GROUP BY {day}, lane, state"
    )


def downgrade() -> None:
    op.drop_table("finished_counts")
