"""Search words inside Chinese, Japanese and Korean text, which puts no spaces between its words.

The full-text indexes (SQLite FTS5's unicode61, PostgreSQL's default parser) cut text at spaces and
punctuation, so "我对花生过敏" is one token and a search for "过敏" finds nothing. Without a dictionary the usual
answer is overlapping character bigrams: every two-character word of a run is one of its bigrams, and a longer
word is the bigrams it is made of. Single characters are indexed too, as one-character words ("猫", "雨") are
common. The same functions cut text when it is stored (`index_tokens`, into `messages.search_cjk` and the
passage index's `cjk` column) and when it is searched (`query_pieces`), so both sides always agree.

Text without these scripts gives nothing here: English is indexed and ranked exactly as before.
"""

from __future__ import annotations

import re

# Han (with its extensions and compatibility ideographs), kana (full and half width), Hangul and the Japanese
# iteration marks. Only letters and numbers, all of which both indexes keep inside a token: a run cut here is
# never cut again by the index's own tokenizer. Ranges written so that SQLite's GLOB and PostgreSQL's regular
# expressions take them inside [...] as well.
CJK = (
    "\u3005-\u3007\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
    "\uff66-\uff9f\u1100-\u11ff\u3131-\u318e\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uffa0-\uffdc"
)
_RUN = re.compile(f"[{CJK}]+")
_ANY = re.compile(f"[{CJK}]")
_WORD = re.compile(r"\w+")


def has_cjk(text: str) -> bool:
    return _ANY.search(text) is not None


def bigrams(run: str) -> list[str]:
    """The overlapping two-character pieces of a run; a one-character run is itself."""
    if len(run) < 2:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def index_tokens(text: str | None) -> str | None:
    """What the index holds for the text beside the text itself, as words separated by spaces: each character
    of every CJK run and its overlapping bigrams, and the other parts of a word that mixes CJK with letters or
    digits ("iPhoneを" gives "iPhone", which the index would otherwise only see as part of one token). None
    when the text has no CJK at all."""
    if not text or not has_cjk(text):
        return None
    tokens: list[str] = []
    for word in _WORD.findall(text):
        if not has_cjk(word):
            continue  # the index has this word as it is
        for piece in _pieces(word):
            if _RUN.fullmatch(piece):
                tokens.extend(piece)
                if len(piece) > 1:
                    tokens.extend(bigrams(piece))
            else:
                tokens.append(piece)
    return " ".join(tokens)


def query_pieces(word: str) -> list[str]:
    """The search terms for one word of a query: the word itself when it has no CJK; else its CJK runs as
    their bigrams (a one-character run as itself) and its other parts as they are."""
    if not has_cjk(word):
        return [word]
    terms: list[str] = []
    for piece in _pieces(word):
        terms.extend(bigrams(piece) if _RUN.fullmatch(piece) else [piece])
    return terms


def _pieces(word: str) -> list[str]:
    """A word cut where CJK starts and stops, underscores (not a word character to the indexes) dropped."""
    pieces: list[str] = []
    at = 0
    for run in _RUN.finditer(word):
        pieces.extend(_plain(word[at : run.start()]))
        pieces.append(run.group())
        at = run.end()
    pieces.extend(_plain(word[at:]))
    return pieces


def _plain(part: str) -> list[str]:
    return [p for p in part.split("_") if p]
