"""The only code that touches the database: schema, migrations, states, transitions, claims and scans."""

from __future__ import annotations

from store.claims import ClaimsRepo
from store.controls import ControlsRepo
from store.database import Database
from store.decisions import DecisionsRepo
from store.jobs import JobsRepo
from store.migrate import migrate
from store.outbox import OutboxRepo
from store.scans import ScansRepo


class Store:
    """All data access, one repository per concept, sharing one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.jobs = JobsRepo(db)
        self.claims = ClaimsRepo(db)
        self.decisions = DecisionsRepo(db)
        self.controls = ControlsRepo(db)
        self.scans = ScansRepo(db)
        self.outbox = OutboxRepo(db)

    @classmethod
    def connect(cls, url: str) -> Store:
        return cls(Database(url))

    async def migrate(self) -> None:
        await migrate(self.db)

    async def close(self) -> None:
        await self.db.dispose()


__all__ = ["Database", "Store"]
