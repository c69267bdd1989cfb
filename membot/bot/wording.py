"""Counts as people read them ("1 passage", "2 passages"): one helper, so every message users see agrees."""

from __future__ import annotations


def counted(count: int, word: str, plural: str | None = None) -> str:
    """`count` and the noun, singular for exactly one; `plural` for nouns that do not just take an "s"."""
    return f"{count:,} {word if count == 1 else plural or word + 's'}"
