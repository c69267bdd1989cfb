"""`membot serve` for Slack: Socket Mode when SLACK_APP_TOKEN is set (no public URL needed), else HTTP on
MEMBOT_SLACK_PORT at /slack/events. Runs until `stop` is set, then stops taking requests, lets running
handlers finish (within a grace period) and returns."""

from __future__ import annotations

import asyncio
import errno
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
#: apps.connections.open errors that mean Slack is failing for now (any other: the app token is refused).
_SLACK_FAILING = {"ratelimited", "fatal_error", "internal_error", "service_unavailable", "request_timeout"}
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
        raise ConnectionError(f"Slack could not check SLACK_BOT_TOKEN ({why})") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionError(f"Could not reach Slack at {client.base_url}: {exc}") from None


async def check_app_token(adapter: SlackAdapter, settings: Settings) -> str:
    """Ask Slack for a Socket Mode connection before serving, and return its URL: the socket-mode client would
    otherwise retry a refused SLACK_APP_TOKEN forever, with a traceback each time."""
    assert settings.slack_app_token is not None
    client = adapter.app.client
    try:
        response = await client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
    except SlackApiError as exc:
        why = exc.response.get("error", "error") if exc.response is not None else "error"
        if why in _SLACK_FAILING:
            raise ConnectionError(f"Slack could not open a Socket Mode connection ({why})") from None
        raise ConfigurationError(
            f"Slack refused SLACK_APP_TOKEN ({why}): make an app-level token (xapp-...) with the connections:write "
            "scope at https://api.slack.com/apps (your app > Basic Information > App-Level Tokens), turn on "
            "Socket Mode, and set SLACK_APP_TOKEN to it."
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionError(f"Could not reach Slack at {client.base_url}: {exc}") from None
    return str(response["url"])


async def run_slack(service: BotService, settings: Settings, stop: asyncio.Event) -> None:
    adapter = SlackAdapter(service, settings)
    async with adapter.connections():  # closed after _serve: the monologue's last posts have gone
        await check_token(adapter)
        service.outlets["slack"] = adapter.deliver_privately  # reminders and heartbeats reach IMs
        try:
            await _serve(adapter, settings, stop)
        finally:
            service.outlets.pop("slack", None)


async def _serve(adapter: SlackAdapter, settings: Settings, stop: asyncio.Event) -> None:
    if settings.slack_app_token:
        await _serve_socket_mode(adapter, settings, stop, await check_app_token(adapter, settings))
        return
    try:
        runner = await http_runner(adapter, settings)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigurationError(
            f"MEMBOT_SLACK_PORT {settings.slack_port} is taken by another program: set MEMBOT_SLACK_PORT to a free port."
        ) from None
    log.info("Slack: listening on port %s at %s", settings.slack_port, EVENTS_PATH)
    try:
        await stop.wait()
    finally:
        # Stop accepting first, so nothing new starts while the running handlers finish.
        await runner.cleanup()
        await adapter.inflight.drain(SHUTDOWN_GRACE)
        await adapter.poster.close()  # the monologue still queued, bounded


async def _serve_socket_mode(adapter: SlackAdapter, settings: Settings, stop: asyncio.Event, url: str) -> None:
    """Connect over the URL check_app_token got, and serve until `stop`. The connecting is raced with `stop`:
    the socket-mode client retries a failing connection forever, and a signal must still end it."""
    handler = socket_mode_handler(adapter, settings)
    handler.client.wss_uri = url
    connecting = asyncio.create_task(handler.connect_async(), name="slack-socket-mode")
    stopping = asyncio.create_task(stop.wait(), name="slack-stop")
    try:
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            log.info("Slack: connected in Socket Mode")
            await stop.wait()
    finally:
        stopping.cancel()
        await handler.close_async()  # also ends a connect loop still retrying
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await adapter.inflight.drain(SHUTDOWN_GRACE)
        await adapter.poster.close()
