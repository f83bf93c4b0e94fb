"""The /queue slash command (filled in with the command-text parser)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.engine import Engine


def register(app: AsyncApp, engine: Engine, *, after_change: Any = None) -> None:
    """Attach the /queue listener."""
