"""The sandbox workspace in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright with
that executable, so nothing is downloaded) opens the page, types `/queue add`, clicks a decision button and
sees the job complete and the message change in place; a screenshot of each is kept in test-artifacts/.

Without Chromium (or Playwright) these tests skip, saying why; under CI=true they fail instead, as CI
installs both (.ci/run and the dev extras)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.jobtypes import Registry
from sandbox.server import SandboxServer
from store.states import JobState
from tests.helpers import free_port, wait_for, wait_for_state
from tests.sandbox_helpers import OWNER, REVIEWER, Sandbox, running_sandbox, sqlite_engine

pytestmark = pytest.mark.browser

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("QUEUEBOT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
#: Playwright's wait for anything on the page: far above what a step takes, so reaching it means a bug.
STEP_TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def sandbox(sqlite_template: Path, tmp_path: Path, types: Registry) -> AsyncIterator[Sandbox]:
    engine, url = sqlite_engine(sqlite_template, tmp_path, types)
    try:
        async with running_sandbox(engine, url) as running:
            yield running
    finally:
        await engine.store.close()


@pytest.fixture
async def page(browser: Any, sandbox: Sandbox) -> AsyncIterator[Any]:
    """The workspace page, acting as Rita Reviewer; fails the test on any script error."""
    context = await browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    await opened.goto(sandbox.url)
    await opened.select_option("#user-switcher", REVIEWER)
    await opened.locator("#user-title").filter(has_text="no rights").wait_for()
    await opened.locator(".live.on").wait_for()  # the event stream is open
    yield opened
    await context.close()
    assert errors == [], errors


async def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


async def test_typing_queue_add_and_clicking_a_decision_button_completes_the_job(
    page: Any, sandbox: Sandbox
) -> None:
    await page.locator("a.conv[data-id=C0QUEUE001]").click()
    await page.fill("#message-box", '/queue add demo.ask question="Ship the browser build?"')
    await page.press("#message-box", "Enter")

    reply = page.locator(".message.ephemeral", has_text="Created Q-")
    await reply.wait_for()
    job_id = int((await reply.inner_text()).split("Created Q-", 1)[1].split(" ", 1)[0])
    decision = page.locator(".message", has_text="Decision needed: Ship the browser build?")
    await decision.locator("button", has_text="approve").click()

    answered = page.locator(".message", has_text="Decision: Ship the browser build?")
    await answered.filter(has_text="@Rita Reviewer answered approve").wait_for()
    assert await answered.locator("button", has_text="approve").count() == 0
    assert (await wait_for_state(sandbox.engine, job_id, JobState.COMPLETED)).result == "approve"
    await answered.scroll_into_view_if_needed()
    await _screenshot(page, "decision-answered.png")


async def test_reject_asks_for_a_reason_in_a_modal_that_shows_the_bots_field_error(
    page: Any, sandbox: Sandbox
) -> None:
    review = page.locator(".message", has_text="Decision needed: Send this text?")
    await review.locator("button", has_text="Reject").click()
    modal = page.locator("#modal-layer .dialog")
    await modal.locator("h2", has_text="Reject").wait_for()

    await modal.locator("button[type=submit]").click()
    await modal.locator(".bk-error", has_text="Please write something.").wait_for()
    await _screenshot(page, "modal-field-error.png")

    await modal.locator("textarea").fill("The refund amount is wrong.")
    await modal.locator("button[type=submit]").click()
    await page.locator("#modal-layer").wait_for(state="hidden")
    await page.locator(".message", has_text="answered reject").wait_for()
    [job] = [j for j in await sandbox.engine.store.jobs.list() if j.type == "demo.review"]
    assert (await wait_for_state(sandbox.engine, job.id, JobState.REJECTED)).state is JobState.REJECTED


#: A message using each part of Block Kit the page draws, as an app might post it.
SHOWCASE = [
    {"type": "header", "text": {"type": "plain_text", "text": "Deploy v2?"}},
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*bold* _italic_ `code` <https://example.com/runbook|the runbook> for <@UOWNER0001>",
        },
        "accessory": {
            "type": "button",
            "action_id": "details",
            "value": "d",
            "text": {"type": "plain_text", "text": "Details"},
        },
    },
    {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": "*Env*\nprod"}, {"type": "mrkdwn", "text": "*Risk*\nlow"}],
    },
    {"type": "divider"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "Q-9 · `deploy`"}]},
    {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "ship",
                "value": "yes",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Ship"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Ship to prod?"},
                    "text": {"type": "mrkdwn", "text": "Customers see it *at once*."},
                    "confirm": {"type": "plain_text", "text": "Ship it"},
                    "deny": {"type": "plain_text", "text": "Not yet"},
                },
            },
            {
                "type": "static_select",
                "action_id": "env",
                "placeholder": {"type": "plain_text", "text": "Environment"},
                "options": [
                    {"text": {"type": "plain_text", "text": name}, "value": name}
                    for name in ("staging", "prod")
                ],
            },
        ],
    },
]


async def test_block_kit_is_drawn_as_slack_draws_it_and_a_confirm_dialog_guards_its_button(
    browser: Any,
) -> None:
    clicks: list[dict[str, Any]] = []

    async def events(request: web.Request) -> web.Response:
        clicks.append(json.loads(str((await request.post())["payload"])))
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = await SandboxServer(bot_url=f"http://127.0.0.1:{port}/slack/events").start()
    try:
        client = AsyncWebClient(token=server.token, base_url=server.api_url)
        posted = await client.chat_postMessage(channel="C0GENERAL1", text="Deploy v2?", blocks=SHOWCASE)
        page = await browser.new_page(viewport={"width": 1360, "height": 860})
        page.set_default_timeout(STEP_TIMEOUT_MS)
        await page.goto(server.url)
        message = page.locator(".message", has_text="Deploy v2?")
        await message.wait_for()
        assert await message.locator(".bk-header").inner_text() == "Deploy v2?"
        text = message.locator(".bk-section-text").first
        assert [await text.locator(tag).inner_text() for tag in ("b", "i", "code", ".mention")] == [
            "bold",
            "italic",
            "code",
            "@Olivia Owner",
        ]
        assert await text.locator("a").get_attribute("href") == "https://example.com/runbook"
        assert await message.locator(".bk-field").count() == 2
        assert await message.locator(".bk-button.primary", has_text="Ship").count() == 1

        await message.locator("button", has_text="Ship").click()
        dialog = page.locator("#confirm-layer .dialog")
        await dialog.locator("h2", has_text="Ship to prod?").wait_for()
        await _screenshot(page, "block-kit-confirm.png")
        await dialog.locator("button", has_text="Not yet").click()
        await message.locator("button", has_text="Ship").click()
        await dialog.locator("button", has_text="Ship it").click()
        await message.locator("select").select_option("prod")

        async def both_clicked() -> bool:
            return len(clicks) >= 2

        await wait_for(both_clicked)
        ship, env = clicks  # "Not yet" sent nothing
        assert (ship["user"]["id"], ship["container"]["message_ts"]) == (OWNER, posted["ts"])
        assert (ship["actions"][0]["action_id"], ship["actions"][0]["value"]) == ("ship", "yes")
        assert ship["response_url"].startswith(server.url + "/response/")
        assert env["actions"][0]["selected_option"]["value"] == "prod"
        await page.close()
    finally:
        await server.close()
        await runner.cleanup()
