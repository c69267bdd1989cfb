"""A few slots per key (a user's uploads being read at once): one user's files cannot take every worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

#: Files of one user read at once; more wait their turn.
UPLOADS_PER_USER = 2


@dataclass
class _Slot:
    free: asyncio.Semaphore
    users: int = 0


class KeyedSlots:
    """At most `size` holders per key at a time. A key with no holder and nobody waiting is forgotten, so the
    table stays as small as the work in hand."""

    def __init__(self, size: int = UPLOADS_PER_USER) -> None:
        self.size = size
        self._slots: dict[Hashable, _Slot] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        slot = self._slots.setdefault(key, _Slot(asyncio.Semaphore(self.size)))
        slot.users += 1
        try:
            async with slot.free:
                yield
        finally:
            slot.users -= 1
            if not slot.users:
                del self._slots[key]

    def busy(self, key: Hashable) -> int:
        """How many hold or wait for a slot of `key`."""
        slot = self._slots.get(key)
        return slot.users if slot else 0
