"""What `/heartbeats` tells a user (every platform says the same): whether timed heartbeats run for their agent,
and when the next one comes. Pure text from the stored state; the service reads and writes it."""

from __future__ import annotations

from membot.agent.store.wakeups import HeartbeatState, local_text
from membot.bot.unsolicited import QuietHours

USAGE = "/heartbeats on or /heartbeats off switches timed heartbeats for your agent; /heartbeats alone shows them."
NOT_OFFERED = "This bot sends no timed heartbeats: its operator has not set MEMBOT_HEARTBEAT_MINUTES."
OFF = "Timed heartbeats are off for your agent; /heartbeats on turns them back on."


def not_offered(choice: str) -> str:
    """The deployment runs no heartbeats: a user's on/off is kept (for when it does), but changes nothing now."""
    kept = f" Your choice ({choice}) is kept for when they are." if choice else ""
    return NOT_OFFERED + kept


def state_text(state: HeartbeatState | None, minutes: int, quiet: QuietHours | None) -> str:
    """`state`: the agent's, None for a user without an agent yet (heartbeats start with their first talk)."""
    if state is not None and not state.on:
        return OFF
    parts = [f"Timed heartbeats are on: your agent is woken {minutes} minutes after you last talked to it, and "
             f"again every {minutes} minutes while you are away; /heartbeats off stops them."]
    due = state.next_due if state is not None else None
    if due is None:
        parts.append("None is due until you next talk to it.")
    else:
        assert state is not None
        if state.paused_until is not None and state.paused_until > due:
            due = state.paused_until
            parts.append(f"It asked for quiet until {local_text(due, state.zone)}.")
        if quiet is not None:
            due = quiet.end_after(due, state.zone) or due
        parts.append(f"The next is due {local_text(due, state.zone)}.")
    if quiet is not None:
        parts.append(f"None comes in the quiet hours, {quiet} your time.")
    return " ".join(parts)
