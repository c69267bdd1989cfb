"""`membot serve`: run every adapter whose tokens are configured, in one process, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable

from membot.bot.errors import ConfigurationError
from membot.bot.retry import Backoff
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.settings import Settings
from membot.bot.stopping import SignalStop

log = logging.getLogger(__name__)

#: An adapter runs until `stop` is set, then shuts down cleanly.
Runner = Callable[[BotService, Settings, asyncio.Event], Awaitable[None]]

#: After the first signal, how long the adapters may take to finish what runs before everything is cancelled.
STOP_GRACE = 45.0
#: How a platform that cannot be reached is tried again.
RETRY = Backoff()


def configured_adapters(settings: Settings) -> dict[str, Runner]:
    """The adapters to start, or a clear error about what is missing or contradictory."""
    runners: dict[str, Runner] = {}
    if settings.discord_token:
        from membot.adapters.discord.runner import run_discord

        runners["discord"] = run_discord
    slack_any = settings.slack_bot_token or settings.slack_app_token or settings.slack_signing_secret
    if slack_any:
        if not settings.slack_bot_token:
            raise ConfigurationError("Slack needs SLACK_BOT_TOKEN (xoxb-...) beside SLACK_APP_TOKEN or SLACK_SIGNING_SECRET.")
        if not (settings.slack_app_token or settings.slack_signing_secret):
            raise ConfigurationError(
                "Slack needs SLACK_APP_TOKEN (Socket Mode, no public URL) or SLACK_SIGNING_SECRET (HTTP mode)."
            )
        from membot.adapters.slack.runner import run_slack

        runners["slack"] = run_slack
    if not runners:
        raise ConfigurationError(
            "Nothing to serve: set DISCORD_TOKEN for Discord, and/or SLACK_BOT_TOKEN with SLACK_APP_TOKEN or "
            "SLACK_SIGNING_SECRET for Slack (see .env.example). To chat in the terminal: membot chat."
        )
    return runners


def freeze_start_up() -> None:
    """Leave what start-up built out of every garbage collection from now on: it lives as long as the process.
    That is nine tenths of what the collector would traverse (95,000 objects: the libraries, the schema, the
    tools); without it, each full collection paused the event loop for 30 ms on an idle bot and 65-85 ms in a
    200-user burst, and every reply in flight waited."""
    gc.freeze()


async def serve(settings: Settings, *, backoff: Backoff = RETRY, stop_grace: float = STOP_GRACE) -> int:
    """Serve until SIGINT/SIGTERM. 0 when stopped, 1 when an adapter stopped on an error it cannot retry.
    A platform that cannot be reached is tried again with `backoff`, saying so; a refused credential stops
    everything at once with one line naming the variable."""
    runners = configured_adapters(settings)
    stop = asyncio.Event()
    signals = SignalStop(stop, stop_grace)
    signals.install()
    try:
        return await _serve(settings, runners, stop, signals, backoff)
    except asyncio.CancelledError:
        if not signals.forced:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        log.warning("membot stopped without waiting for what was still running")
        return 0
    finally:
        signals.remove()


async def _serve(
    settings: Settings, runners: dict[str, Runner], stop: asyncio.Event, signals: SignalStop, backoff: Backoff
) -> int:
    service = await BotService.open(settings)
    freeze_start_up()
    # Reminders and timed heartbeats, to each user through their platform's adapter (its outlet).
    scheduler = Scheduler(service, service.deliver_wakeup, platforms=set(runners))
    try:
        tasks = [
            asyncio.create_task(keep_serving(name, runner, service, settings, stop, backoff), name=name)
            for name, runner in runners.items()
        ]
        scheduler.start()
        signals.starting = False
        log.info("membot serving: %s", ", ".join(runners))
        failed = 0
        for task in asyncio.as_completed(tasks):
            try:
                await task
            except Exception as exc:  # one adapter failing stops the others, with a clear reason
                # A setup mistake is said in words; anything else is a bug, and its traceback is kept.
                log.error("adapter stopped: %s", exc, exc_info=not isinstance(exc, ConfigurationError))
                failed = 1
                stop.set()
        return failed
    finally:
        await scheduler.stop()
        await service.close()


async def keep_serving(
    name: str, runner: Runner, service: BotService, settings: Settings, stop: asyncio.Event, backoff: Backoff
) -> None:
    """Run one adapter until `stop`; while its platform cannot be reached (ConnectionError), try again after a
    growing wait, saying so. Anything else (a refused credential: ConfigurationError) ends it at once."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while not stop.is_set():
        started = loop.time()
        try:
            await runner(service, settings, stop)
            return
        except ConnectionError as exc:
            if stop.is_set():
                return
            if loop.time() - started > backoff.cap:  # it ran a while: this is a new outage
                attempt = 0
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning("%s: %s; trying again in %.0f s (attempt %d)", name, exc, delay, attempt + 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
