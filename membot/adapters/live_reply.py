"""A reply shown while the model writes it (ReplyDraft events), on a platform that can edit what it posted.

The first part is posted once there is a sentence or FIRST_AFTER seconds of text (never before FIRST_NOT_BEFORE:
a quick reply is posted once, whole), then edited in place at most
every EDIT_INTERVAL seconds; past the platform's length it continues in a new message. Draft edits spend a
budget shared per channel (and per workspace where the platform limits that) with everything else the bot
posts: when it is spent, drafts wait (the text piles up and goes with a later edit), so a busy channel gets
fewer edits, never a 429 storm. The final text (the AssistantMessage) is never held back: it replaces the draft
exactly, split as a reply that was never streamed would be. A dropped draft is deleted.

Platform-neutral: the adapter gives how to post, edit and delete one message, and how to split a text.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from membot.agent.events import AssistantMessage, DraftDropped, Event, ReplyDraft

log = logging.getLogger(__name__)

FIRST_AFTER = 1.0
#: No draft is posted sooner than this after the reply began: a quick model's reply is posted once, whole.
FIRST_NOT_BEFORE = 0.4
EDIT_INTERVAL = 1.0
#: A whole sentence is in the text: its end, then a space, a new line or the end of the text so far.
_SENTENCE = re.compile(r"[.!?](?:\s|$)|[。！？\n]")

#: Posts one part: (text, final) -> a handle to edit it by, or None if it could not be posted. A draft's post
#: (final False) should not wait out a rate limit: a later draft or the final text goes instead.
Post = Callable[[str, bool], Awaitable[Any]]
Edit = Callable[[Any, str], Awaitable[None]]
Delete = Callable[[Any], Awaitable[None]]
Split = Callable[[str], list[str]]


class Budget:
    """At most `limit` requests in any `window` seconds: draft posts and edits, whose final text, which must
    go, is counted without asking; or, with `take`, every request, each waiting for room (Discord's global
    limit, adapters/discord/pacing.py). `edits_only`: a limit on the platform's edit method alone. A reply's
    first post is the post it makes anyway, but once it is a draft its final text will be an edit: the
    draft's post spends that edit ahead, and the final text spends nothing of it."""

    def __init__(self, limit: int, window: float, *, edits_only: bool = False) -> None:
        self.limit, self.window, self.edits_only = limit, window, edits_only
        self._times: deque[float] = deque()
        #: `take`'s queue: first come, first served (asyncio's lock wakes its waiters in order).
        self._turn = asyncio.Lock()

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def free(self, now: float) -> bool:
        return self.room(now) > 0

    def room(self, now: float) -> int:
        """How many could be spent now."""
        self._forget(now)
        return self.limit - len(self._times)

    def spend(self, now: float) -> None:
        self._forget(now)
        self._times.append(now)

    def until(self, now: float, room: int = 1) -> float:
        """Seconds until `room` could be spent (0: now, or never: more than the whole budget)."""
        short = room - self.room(now)
        if short <= 0 or not self._times:
            return 0.0
        return self.window - (now - self._times[min(short, len(self._times)) - 1])

    async def take(self) -> None:
        """Spend one, first waiting until the window has room: for requests that must go, paced before a
        platform's limit rather than refused by it (a 429 costs its retry_after, longer than the wait). Waiters
        go in the order they came: when many replies finish at once, none is overtaken again and again."""
        async with self._turn:
            while True:
                now = time.monotonic()
                if self.limit <= 0 or self.free(now):  # a budget of none paces nothing (it only refuses drafts)
                    self.spend(now)
                    return
                await asyncio.sleep(max(0.001, self.until(now)))


class Budgets:
    """The budgets of one platform's places (channels, workspaces), made on first use."""

    def __init__(self, limit: int, window: float, *, edits_only: bool = False) -> None:
        self.limit, self.window, self.edits_only = limit, window, edits_only
        self._by_key: dict[str, Budget] = {}

    def of(self, key: str) -> Budget:
        budget = self._by_key.get(key)
        if budget is None:
            if len(self._by_key) > 10_000:  # idle places' budgets are empty anyway
                self._by_key.clear()
            budget = self._by_key[key] = Budget(self.limit, self.window, edits_only=self.edits_only)
        return budget


class LiveReply:
    def __init__(
        self,
        post: Post,
        edit: Edit,
        delete: Delete,
        split: Split,
        budgets: Sequence[Budget],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post, self._edit, self._delete, self._split = post, edit, delete, split
        self._budgets = budgets
        self._clock = clock
        #: The posted messages, and the text each shows.
        self._shown: list[tuple[Any, str]] = []
        self._started: float | None = None
        self._last = 0.0

    async def draft(self, text: str) -> None:
        """The reply so far: shown now if it is time and the budgets allow, else with a later draft."""
        now = self._clock()
        if self._started is None:
            self._started = now
        if not self._shown:
            waited = now - self._started
            if waited < FIRST_NOT_BEFORE or not (_SENTENCE.search(text) or waited >= FIRST_AFTER):
                return
        elif now - self._last < EDIT_INTERVAL:
            return
        if not all(budget.free(now) for budget in self._budgets):
            return
        await self._show(self._split(text), now)

    async def finish(self, text: str) -> None:
        """The final text, exactly: edits what the drafts posted, posts what is beyond it, deletes the rest."""
        await self._show(self._split(text), self._clock(), final=True)

    async def drop(self) -> None:
        """Take back what the drafts posted."""
        shown, self._shown = self._shown, []
        for handle, _ in shown:
            await self._quiet_delete(handle)

    async def _show(self, parts: list[str], now: float, final: bool = False) -> None:
        """Make the posted messages show `parts`. A draft's failure stops there (a later draft or the final text
        tries again); the final text never gives up on a part: one that cannot be edited in is posted anew."""
        for i, part in enumerate(parts):
            edited = i < len(self._shown)
            if edited:
                handle, showing = self._shown[i]
                if showing == part:
                    continue
                try:
                    await self._edit(handle, part)
                except Exception as exc:
                    if not final:
                        raise
                    log.warning("could not edit a reply's final text in; posting it anew: %s", exc)
                    await self._quiet_delete(handle)
                    handle = await self._post(part, True)
                self._shown[i] = (handle, part)
            else:
                handle = await self._post(part, final)
                if handle is None and not final:
                    return  # not shown: the next draft, or the final text, posts it
                self._shown.append((handle, part))
            for budget in self._budgets:
                # A budget of edits: a draft's post reserves the edit its final text will need, which then
                # spends nothing; so drafts of many replies at once cannot promise more edits than it holds.
                if not (budget.edits_only and final):
                    budget.spend(now)
        if final:
            for handle, _ in self._shown[len(parts):]:
                await self._quiet_delete(handle)
            del self._shown[len(parts):]
        self._last = now

    async def _quiet_delete(self, handle: Any) -> None:
        if handle is None:
            return
        try:
            await self._delete(handle)
        except Exception as exc:  # a post that cannot be deleted stays; the step goes on
            log.warning("could not delete a draft: %s", exc)


class LiveReplies:
    """The replies of one step shown while they are written: each event that concerns them goes to its draft's
    LiveReply (made by `make`); what is left when the step ends without its final text (the model broke off,
    the commit failed, the step was cancelled) is taken back, so no half reply stays posted."""

    def __init__(self, make: Callable[[], LiveReply]) -> None:
        self._make = make
        self._open: dict[str, LiveReply] = {}

    async def handle(self, event: Event) -> bool:
        """Show what `event` says of a draft; whether it was a draft's (else the caller posts it as usual)."""
        if isinstance(event, ReplyDraft):
            reply = self._open.get(event.draft) or self._open.setdefault(event.draft, self._make())
            try:
                await reply.draft(event.text)
            except Exception as exc:  # a draft that could not be shown: the final text goes anyway
                log.warning("could not show a reply as it is written: %s", exc)
            return True
        if isinstance(event, DraftDropped):
            if event.draft in self._open:
                await self._open.pop(event.draft).drop()
            return True
        if isinstance(event, AssistantMessage) and event.draft in self._open:
            reply = self._open.pop(event.draft)
            try:
                await reply.finish(event.text)
            except Exception:
                log.exception("could not post a reply's final text")
            return True
        return False

    async def close(self) -> None:
        """Take back every draft whose final text never came."""
        left, self._open = list(self._open.values()), {}
        for reply in left:
            await reply.drop()
