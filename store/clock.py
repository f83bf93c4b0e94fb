"""The one clock: every time rule reads it, so tests can freeze it (never the database's now())."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
