"""How the monologue reads: one plain line per event the user does not see. Adapters escape and clip it
for their platform and send it where their settings say."""

from __future__ import annotations

from membot.agent.events import Event, FunctionCall, FunctionResult, SystemNote, Thought


def monologue_line(event: Event) -> str | None:
    """The line for a monologue event; None for what the user sees."""
    if isinstance(event, Thought):
        return f"💭 {event.text}"
    if isinstance(event, FunctionCall):
        return f"⚡ {event.name}({event.arguments})"
    if isinstance(event, FunctionResult):
        return f"{'✓' if event.ok else '✗'} {event.name}: {event.result}"
    if isinstance(event, SystemNote):
        return f"· {event.text}"
    return None
