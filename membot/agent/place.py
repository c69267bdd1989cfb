"""Where a step happens: a private conversation (a DM, the terminal) or a shared channel.

One user has one agent everywhere, so what they say in a DM must never surface where others read. Each stored
message records whether it was private and where it was said; a step in a shared channel sees none of the
private ones: not in the context window, not in the summary of evicted messages, not in conversation or
archival search, not in the `private` core memory block. The stores apply the filter from the step's place;
the model cannot ask past it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The core memory block that holds what the agent learnt in private conversations.
PRIVATE_BLOCK = "private"


@dataclass(frozen=True)
class Place:
    """`private`: a conversation only its user reads. `key`: where, as the adapter names it (stored with each
    message). `label`: how the model is told where it is ("a direct message", "#general in Acme")."""

    private: bool
    key: str
    label: str

    @classmethod
    def direct(cls, label: str = "a private conversation") -> Place:
        return cls(True, "dm", label)

    @classmethod
    def shared(cls, key: str, label: str) -> Place:
        return cls(False, key, label)


#: Steps nobody but the user sees: the terminal, reminders and heartbeats delivered by DM, system events.
PRIVATE = Place.direct()
