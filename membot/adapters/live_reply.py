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

import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

FIRST_AFTER = 1.0
#: No draft is posted sooner than this after the reply began: a quick model's reply is posted once, whole.
FIRST_NOT_BEFORE = 0.4
EDIT_INTERVAL = 1.0
#: A whole sentence is in the text: its end, then a space, a new line or the end of the text so far.
_SENTENCE = re.compile(r"[.!?](?:\s|$)|[。！？\n]")

Post = Callable[[str], Awaitable[Any]]
Edit = Callable[[Any, str], Awaitable[None]]
Delete = Callable[[Any], Awaitable[None]]
Split = Callable[[str], list[str]]


class Budget:
    """At most `limit` draft posts and edits in any `window` seconds; posts that must go (a final text) are
    counted without asking."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def free(self, now: float) -> bool:
        self._forget(now)
        return len(self._times) < self.limit

    def spend(self, now: float) -> None:
        self._forget(now)
        self._times.append(now)


class Budgets:
    """The budgets of one platform's places (channels, workspaces), made on first use."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._by_key: dict[str, Budget] = {}

    def of(self, key: str) -> Budget:
        budget = self._by_key.get(key)
        if budget is None:
            if len(self._by_key) > 10_000:  # idle places' budgets are empty anyway
                self._by_key.clear()
            budget = self._by_key[key] = Budget(self.limit, self.window)
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
        self.edits = 0

    @property
    def posted(self) -> bool:
        return bool(self._shown)

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
            try:
                await self._delete(handle)
            except Exception as exc:  # a post that cannot be deleted stays; the step goes on
                log.warning("could not delete a dropped draft: %s", exc)

    async def _show(self, parts: list[str], now: float, final: bool = False) -> None:
        for i, part in enumerate(parts):
            if i < len(self._shown):
                handle, showing = self._shown[i]
                if showing == part:
                    continue
                await self._edit(handle, part)
                self.edits += 1
                self._shown[i] = (handle, part)
            else:
                self._shown.append((await self._post(part), part))
            for budget in self._budgets:
                budget.spend(now)
        if final:
            for handle, _ in self._shown[len(parts):]:
                await self._delete(handle)
            del self._shown[len(parts):]
        self._last = now
