"""Uploads: a file sent to the bot (in a DM, or to /attach) becomes a data source attached to the sender's
agent. One status message shows progress and then the outcome; a bad file gets a clear reason there and
changes nothing (the service guarantees the "nothing": a failed file leaves no source behind)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import aiohttp
import discord

from membot.agent.events import Event
from membot.agent.sources.loader import FileOutcome
from membot.bot.identity import UserRef
from membot.bot.service import BotService, CommandError

log = logging.getLogger(__name__)

#: Progress edits at most this often: Discord rate-limits edits (about 5 per 5 s per channel).
PROGRESS_INTERVAL = 1.5


class Editable(Protocol):
    async def edit(self, *, content: str) -> object: ...


#: Posts the status message (a DM message, an ephemeral follow-up) and returns it for editing.
Post = Callable[[str], Awaitable[Editable]]
#: What to do with the agent's reaction to the news (the normal posting path).
After = Callable[[AsyncIterator[Event]], Awaitable[None]]


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def outcome_text(outcome: FileOutcome, source: str) -> str:
    into = "" if source == outcome.filename else f" into {source}"
    if outcome.failed:
        return f"Could not load {outcome.reason.rstrip('.')}. Nothing was changed."
    if outcome.status == "duplicate":
        return f"{outcome.filename} was already loaded{into}; it is attached to your agent."
    size = _count(outcome.passages, "passage")
    return f"Loaded {outcome.filename}{into}: {size} from {_count(outcome.pages, 'page')}, attached to your agent."


class ProgressMessage:
    """Edits one message with the loader's progress, throttled; the loader's callback is synchronous, so
    it only records the latest figures and a task does the editing."""

    def __init__(self, message: Editable, filename: str, interval: float = PROGRESS_INTERVAL) -> None:
        self.message = message
        self.filename = filename
        self.interval = interval
        self._latest: tuple[int, int] | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def update(self, written: int, total: int) -> None:
        self._latest = (written, total)
        self._changed.set()

    async def _run(self) -> None:
        shown: tuple[int, int] | None = None
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._latest is not None and self._latest != shown:
                shown = self._latest
                await self._edit(f"Loading {self.filename}… {shown[0]}/{shown[1]} passages")
            await asyncio.sleep(self.interval)

    async def finish(self, text: str) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._edit(text)

    async def _edit(self, text: str) -> None:
        try:
            await self.message.edit(content=text)
        except discord.HTTPException as exc:  # progress is a courtesy; the outcome is what matters
            log.warning("could not update the upload status of %s: %s", self.filename, exc)


async def load_upload(
    service: BotService,
    user: UserRef,
    attachment: discord.Attachment,
    *,
    max_bytes: int,
    post: Post,
    after: After,
    source_name: str | None = None,
    is_admin: bool = False,
) -> bool:
    """Load one attachment into a source (named after the file unless given) and attach it to the user's
    agent; the agent's reaction goes to `after`. True when the file is now in the source. `is_admin`: the user
    is one of the bot's operators, who may add to a shared source of someone else's."""
    filename = attachment.filename
    if attachment.size > max_bytes:
        # Checked before downloading: Discord says the size, no need to fetch what we would refuse.
        await post(f"Could not load {filename}: {_mb(attachment.size)} is over the {_mb(max_bytes)} limit. "
                   "Nothing was changed.")
        return False
    status = await post(f"Loading {filename}…")
    progress = ProgressMessage(status, filename)
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        await progress.finish(f"Could not download {filename} from Discord ({exc.status}); please send it again.")
        return False
    except (aiohttp.ClientError, OSError, TimeoutError):
        await progress.finish(f"Could not download {filename} from Discord (the connection failed); "
                              "please send it again.")
        return False
    try:
        outcome, events = await service.load_file(
            user, filename, data, source_name=source_name, progress=progress.update, is_admin=is_admin
        )
    except CommandError as exc:  # refused (a bad name, someone else's source): the status says why
        await progress.finish(str(exc))
        return False
    except BaseException:
        await progress.finish(f"Could not load {filename}. Nothing was changed.")
        raise
    await progress.finish(outcome_text(outcome, source_name or filename))
    await after(events)
    return not outcome.failed
