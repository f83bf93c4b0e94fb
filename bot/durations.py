"""Durations as people write them in config and job types: "90s", "15m", "2h", "1d" or seconds."""

from __future__ import annotations

import re

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration_s(value: str | float | int) -> float:
    """Seconds in a duration; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '15m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    number, unit = match.groups()
    return float(number) * _UNITS_S[unit or "s"]


def format_age(seconds: float) -> str:
    """A short age for people: 45s, 12m, 3.5h."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
