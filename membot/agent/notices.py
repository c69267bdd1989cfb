"""What the agent is told by the system, and what a user is told when the model cannot answer: texts, kept
apart from the step loop that sends them."""

from __future__ import annotations

NO_CALL_HINT = (
    "You answered without calling a function, so the user saw nothing: your text is private monologue. "
    "Call send_message to reply to the user (or another function to work on your memory)."
)
PRESSURE_ALERT = (
    "Memory pressure: your context window is {pct}% full. Soon the oldest messages will be summarised and "
    "leave it (they stay searchable in recall memory). Save anything important now: facts about the user "
    "with core_memory_append or core_memory_replace, other details with archival_memory_insert."
)
MODEL_DOWN = "Sorry, I can't think right now: {why} Your message is saved; try again in a moment."
MODEL_REFUSED = "Sorry, I can't answer: {why} Your message is saved."
NO_REPLY = "Sorry, I couldn't put a reply together this time. Your message is saved."
CANCELLED = "Cancelled by the user (/cancel): the chain stopped after this model call; what it did is kept."
# Model calls a message may take when the model answers only in text (see Agent._plain_answer).
PLAIN_ANSWERS = 3
GAVE_UP = (
    "The model answered in plain text {n} times, even when told to call a function; with MEMBOT_INNER_THOUGHTS="
    "content its text is private. Use a model that follows tool_choice, MEMBOT_INNER_THOUGHTS=arguments, or "
    "MEMBOT_TOOL_MODE=json."
)


def trouble(exc: Exception) -> str:
    """What the user is told when the model cannot answer: a permanent refusal never says "try again"."""
    return (MODEL_REFUSED if getattr(exc, "permanent", False) else MODEL_DOWN).format(why=str(exc))


# What a scheduled wake-up tells the agent (bot/scheduler.py fires them).
HEARTBEAT_TEXT = "Timed heartbeat: {minutes} minutes since the last activity."
REFLECTION_TEXT = (
    "Reflection: the conversation has rested for {minutes} minutes and nobody is waiting for an answer. Tidy your "
    "memory now: bring core memory up to date with what you learnt (facts about the user, corrections, what is "
    "out of date), record lasting facts (who, where, since when) with knowledge_insert, and save other durable "
    "details and decisions to archival memory. Say in your thoughts what you changed. Send the user nothing "
    "unless something is important for them to hear now."
)
REMINDER_TEXT = "Reminder you scheduled for {when}: {note}"
