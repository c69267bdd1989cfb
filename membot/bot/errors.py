"""Errors that the entry points and the adapters both raise or catch: here, so that adapters never import an
entry point (`serve`, the CLI) for them."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """Settings that cannot work; the message says what to set."""


class QuotaReached(Exception):
    """A user's quota is used up; the message says which and when it resets."""


class CommandError(ValueError):
    """Bad input to a command; the message is for the user."""


#: A command that needs the agent while another process runs a long step of it.
BUSY_COMMAND = "Your agent is busy with a long step in another process; try again in a minute."
