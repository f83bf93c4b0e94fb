"""Events: the App Home tab is published when someone opens it."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine import Engine
from bot.home import home_view


def register(app: AsyncApp, engine: Engine) -> None:
    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab") not in (None, "home"):
            return
        user = str(event["user"])
        await client.views_publish(user_id=user, view=await home_view(engine, user))
