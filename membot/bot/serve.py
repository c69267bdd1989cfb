"""`membot serve`: run every adapter whose tokens are configured, in one process, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from membot.bot.errors import ConfigurationError
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.settings import Settings

log = logging.getLogger(__name__)

#: An adapter runs until `stop` is set, then shuts down cleanly.
Runner = Callable[[BotService, Settings, asyncio.Event], Awaitable[None]]


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


async def serve(settings: Settings) -> int:
    runners = configured_adapters(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread, or not supported here
            pass
    service = await BotService.open(settings)
    freeze_start_up()
    # Reminders and timed heartbeats, to each user through their platform's adapter (its outlet).
    scheduler = Scheduler(service, service.deliver_wakeup, platforms=set(runners))
    try:
        tasks = {asyncio.create_task(runner(service, settings, stop), name=name): name for name, runner in runners.items()}
        scheduler.start()
        log.warning("membot serving: %s", ", ".join(runners))
        failed = 0
        for task in asyncio.as_completed(list(tasks)):
            try:
                await task
            except Exception as exc:  # one adapter failing stops the others, with a clear reason
                # A setup mistake or an unreachable platform is said in words; anything else is a bug, and its
                # traceback is kept.
                log.error("adapter stopped: %s", exc, exc_info=not isinstance(exc, ConfigurationError | ConnectionError))
                failed = 1
                stop.set()
        return failed
    finally:
        await scheduler.stop()
        await service.close()
