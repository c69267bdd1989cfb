"""Turning a search request into terms: words, lower-cased, without stop words (kept when nothing else is).

A word in Chinese, Japanese or Korean becomes the bigrams (or the one character) the indexes hold for it
(see cjk.py): "花生过敏" is searched as 花生, 生过, 过敏, any of which finds a message."""

from __future__ import annotations

import re

from membot.agent.memory.cjk import query_pieces

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
