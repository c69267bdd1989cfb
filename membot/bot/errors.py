"""Errors that the entry points and the adapters both raise or catch: here, so that adapters never import an
entry point (`serve`, the CLI) for them."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """Settings that cannot work; the message says what to set."""


class QuotaReached(Exception):
    """A user's quota is used up; the message says which and when it resets."""
