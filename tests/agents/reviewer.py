"""Proposes an output and asks for a person's review."""

from __future__ import annotations

from _protocol import send

send("evidence", summary="drafted the release notes")
send(
    "result",
    result={"notes": "v2: faster claims"},
    review={
        "summary": "release notes for v2",
        "why": "customer-facing text",
        "question": "Publish these notes?",
    },
)
