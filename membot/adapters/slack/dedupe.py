"""What was already handled, so that each Slack event is handled once.

Slack redelivers an event (same event_id) when it thinks the first delivery failed, sends one upload as
both `message/file_share` and `file_shared`, and may send a DM mention as both `message` and
`app_mention`. Each of these is handled once by claiming a key first. Behind a load balancer the second
delivery may reach another process of the bot, so a claim this process has not seen goes on to the bot's
shared claim (in the database); this process's memory of recent keys spares it that round trip for what it
handled itself. The memory is bounded (oldest keys first): redeliveries come within minutes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Seen:
    def __init__(self, capacity: int = 10_000, shared: Callable[[str], Awaitable[bool]] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.shared = shared
        self._keys: OrderedDict[str, None] = OrderedDict()

    async def claim(self, key: str) -> bool:
        """True the first time a key is claimed by any process (go ahead), False after (drop it)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        if self.shared is None:
            return True
        try:
            return await self.shared(key)
        except Exception:
            # Better to answer twice, rarely, than to drop a user's message because the claim failed.
            log.warning("could not claim Slack event %s across processes; handling it here", key, exc_info=True)
            return True

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
