"""A bounded memory of what was already handled.

Slack redelivers an event (same event_id) when it thinks the first delivery failed, sends one upload as
both `message/file_share` and `file_shared`, and may send a DM mention as both `message` and
`app_mention`. Each of these is handled once by claiming a key first. The memory is bounded (oldest keys
are forgotten first) because a long-running bot must not grow without limit; redeliveries come within
minutes, so a few thousand recent keys are plenty.
"""

from __future__ import annotations

from collections import OrderedDict


class Seen:
    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True the first time a key is claimed (go ahead), False while it is remembered (drop it)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
