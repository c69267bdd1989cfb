"""The typed events a step yields. The caller (bot, adapter) decides where each goes:
visible ones to the user, the rest to the private monologue channel."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    agent_id: int

    #: True when the user is meant to see it; everything else is monologue.
    visible = False


@dataclass(frozen=True)
class Thought(Event):
    """The model's inner monologue (the assistant message's text content)."""

    text: str


@dataclass(frozen=True)
class FunctionCall(Event):
    name: str
    arguments: str


@dataclass(frozen=True)
class FunctionResult(Event):
    name: str
    ok: bool
    result: str


@dataclass(frozen=True)
class AssistantMessage(Event):
    """Text the agent sent with send_message: the only thing the user sees of a step. `draft`: the key of the
    ReplyDraft events that showed it while the model wrote it, if any (this text is their final form)."""

    text: str
    draft: str | None = None
    visible = True


@dataclass(frozen=True)
class ReplyDraft(Event):
    """A reply as far as the model has written it (a streamed send_message): all of its text so far, each time
    it grows. Its AssistantMessage (same `draft` key) follows once the step has stored it; an adapter that does
    not stream ignores drafts and posts that."""

    draft: str
    text: str


@dataclass(frozen=True)
class DraftDropped(Event):
    """The send_message a draft showed failed (malformed, refused): whatever showed it goes, and no
    AssistantMessage follows for it."""

    draft: str


@dataclass(frozen=True)
class SystemNote(Event):
    """Something the engine did on its own: a cut chain, a summary, a pressure alert."""

    text: str


@dataclass(frozen=True)
class ErrorMessage(Event):
    """A short, clear message for the user when the step could not run (the model is down)."""

    text: str
    visible = True
