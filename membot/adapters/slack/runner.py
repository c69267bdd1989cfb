"""`membot serve` for Slack: Socket Mode when SLACK_APP_TOKEN is set (no public URL needed), else HTTP on
MEMBOT_SLACK_PORT at /slack/events. Runs until `stop` is set, then stops taking requests, lets running
handlers finish (within a grace period) and returns."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError

from membot.adapters.slack.app import SlackAdapter
from membot.bot.errors import ConfigurationError
from membot.bot.service import BotService
from membot.bot.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
#: auth.test errors that mean the token itself is wrong (others: Slack is failing or rate-limiting).
_TOKEN_REFUSED = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
#: A step usually ends within seconds; past this, shutdown cancels it (what it committed stays).
SHUTDOWN_GRACE = 20.0


def socket_mode_handler(adapter: SlackAdapter, settings: Settings) -> AsyncSocketModeHandler:
    assert settings.slack_app_token is not None
    # The handler opens its connection through the app's Web API client, so MEMBOT_SLACK_API_URL applies.
    return AsyncSocketModeHandler(adapter.app, settings.slack_app_token.get_secret_value())


async def http_runner(adapter: SlackAdapter, settings: Settings, host: str | None = None) -> web.AppRunner:
    """The Events API / slash-command endpoint, started on settings.slack_port (0: any free port)."""
    runner = web.AppRunner(adapter.app.web_app(path=EVENTS_PATH, port=settings.slack_port), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, settings.slack_port).start()
    return runner


async def check_token(adapter: SlackAdapter) -> None:
    """Ask Slack who we are before serving: a wrong SLACK_BOT_TOKEN would otherwise fail every event quietly
    (bolt only calls auth.test once the first event arrives)."""
    client = adapter.app.client
    try:
        await client.auth_test()
    except SlackApiError as exc:
        why = exc.response.get("error", "error") if exc.response is not None else "error"
        if why in _TOKEN_REFUSED:
            raise ConfigurationError(
                f"Slack refused SLACK_BOT_TOKEN ({why}): copy the Bot User OAuth Token (xoxb-...) again from "
                "https://api.slack.com/apps (your app > OAuth & Permissions)."
            ) from None
        raise ConnectionError(f"Slack could not check SLACK_BOT_TOKEN ({why}); try again in a moment.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionError(f"Could not reach Slack at {client.base_url}: {exc}") from None


async def run_slack(service: BotService, settings: Settings, stop: asyncio.Event) -> None:
    adapter = SlackAdapter(service, settings)
    await check_token(adapter)
    service.outlets["slack"] = adapter.deliver_privately  # reminders and heartbeats reach IMs
    try:
        await _serve(adapter, settings, stop)
    finally:
        service.outlets.pop("slack", None)


async def _serve(adapter: SlackAdapter, settings: Settings, stop: asyncio.Event) -> None:
    if settings.slack_app_token:
        handler = socket_mode_handler(adapter, settings)
        await handler.connect_async()
        log.warning("Slack: connected in Socket Mode")
        try:
            await stop.wait()
        finally:
            await handler.close_async()
            await adapter.inflight.drain(SHUTDOWN_GRACE)
            await adapter.poster.close()
        return
    runner = await http_runner(adapter, settings)
    log.warning("Slack: listening on port %s at %s", settings.slack_port, EVENTS_PATH)
    try:
        await stop.wait()
    finally:
        # Stop accepting first, so nothing new starts while the running handlers finish.
        await runner.cleanup()
        await adapter.inflight.drain(SHUTDOWN_GRACE)
        await adapter.poster.close()  # the monologue still queued, bounded
