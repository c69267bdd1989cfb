"""What can go wrong asking a model, as the step loop tells the cases apart. Every message is safe to show a
user: it names the cause, never a key."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """The model could not answer, after the SDK's retries: unreachable, too slow, overloaded, rate-limited.
    Waiting may fix it (`permanent` False) unless a subclass says otherwise."""

    permanent: bool = False


class ModelRefused(ModelUnavailable):
    """The endpoint refused in a way retrying cannot fix (a wrong key, an unknown model, no quota left, a request
    it does not take); the message names the setting to change."""

    permanent = True


class ToolsUnsupported(ModelRefused):
    """The server refuses tools (function calling) for this model; functions can still be offered in the text."""


class ContextOverflow(RuntimeError):
    """The server said the prompt is longer than the model's context window."""
