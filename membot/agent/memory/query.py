"""Turning a search request into terms: words, lower-cased, without stop words (kept when nothing else is).

A word in Chinese, Japanese or Korean becomes the bigrams (or the one character) the indexes hold for it
(see cjk.py): "花生过敏" is searched as 花生, 生过, 过敏, any of which finds a message."""

from __future__ import annotations

import re

from membot.agent.memory.cjk import query_pieces
from membot.agent.memory.entities import MAX_WORDS, entity_key, extract

_WORD = re.compile(r"\w+", re.UNICODE)

STOP_WORDS = frozenset(
    """a about an and are as at be been but by can could did do does for from had has have he her hers him
    his how i if in into is it its me my of on or our she so than that the their them then there these they
    this those to us was we were what when where which who whom why will with would you your yours""".split()
)


def query_terms(query: str, limit: int = 32) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOP_WORDS] or words
    seen: dict[str, None] = {}
    for word in kept:
        for term in query_pieces(word):
            seen.setdefault(term, None)
    return list(seen)[:limit]


# Bounds what a query looks up: a long query's every run of words is no name anyway.
_MAX_KEYS = 64
_POSSESSIVE = re.compile(r"['’]s\b", re.IGNORECASE)  # "Tom's" names Tom: inside a query, not only at its end


def query_keys(query: str) -> list[str]:
    """The entity keys a query may name (memory/entities.py keys them by `entity_key`): what the extractor finds
    in it (a name before an honorific, a handle, a katakana run), then every run of one to four of its words,
    lower-cased as users often type names, so "what did tom say" names "tom". Stop words alone are no key."""
    found = [mention.key for mention in extract(query)]
    words = [w.lower() for w in _WORD.findall(_POSSESSIVE.sub("", query))]
    # Single words first: the cap must not cut the likeliest names off a long query.
    for size in range(1, MAX_WORDS + 1):
        for start in range(len(words) - size + 1):
            run = words[start : start + size]
            if run[0] not in STOP_WORDS and run[-1] not in STOP_WORDS:
                found.append(entity_key(" ".join(run)))
    seen = dict.fromkeys(key for key in found if key)
    return list(seen)[:_MAX_KEYS]
