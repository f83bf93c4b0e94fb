"""Bring a database's schema to the newest Alembic revision."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from store.database import Database

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: replicas starting together take turns migrating.
_MIGRATION_LOCK_ID = 0x71B07


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the schema; safe to run from several processes at once."""
    config = alembic_config()

    def _upgrade(sync_conn: sa.Connection) -> None:
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with db.write() as conn:
        if db.is_postgres:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        await conn.run_sync(_upgrade)
