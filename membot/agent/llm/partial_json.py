"""Reading one string field out of a JSON object that is still arriving: a streamed function call's arguments,
from which the reply (`send_message`'s `message`) is shown while the model writes it. Pure logic.

Only the object's top level is read; other values are skipped whole (strings with their escapes, numbers,
nested objects and arrays). What is returned is always a prefix of what the finished value decodes to: an
escape cut off at the end of the text is left out until it is complete.
"""

from __future__ import annotations

import json

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WHITESPACE = " \t\r\n"


def partial_string(text: str, key: str) -> str | None:
    """The value of top-level `key` so far, if it is a string that has begun; None otherwise (not there yet,
    not a string, or the text is not a JSON object)."""
    i = _skip(text, 0)
    if i >= len(text) or text[i] != "{":
        return None
    i += 1
    while True:
        i = _skip(text, i)
        if i >= len(text) or text[i] != '"':
            return None
        name, i, done = _string(text, i)
        if not done:
            return None
        i = _skip(text, i)
        if i >= len(text) or text[i] != ":":
            return None
        i = _skip(text, i + 1)
        if i >= len(text):
            return None
        if name == key:
            return _string(text, i)[0] if text[i] == '"' else None
        i = _value_end(text, i)
        if i is None:
            return None
        i = _skip(text, i)
        if i >= len(text) or text[i] != ",":
            return None
        i += 1


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _string(text: str, start: int) -> tuple[str, int, bool]:
    """The string opening at `start` (a quote): its decoded text so far, the index after it, and whether it
    closed."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1, True
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(text):
            break  # an escape cut off: wait for the rest
        code = text[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        if code != "u":
            out.append(code)  # invalid JSON; kept, the final parse decides
            i += 2
            continue
        unit = _unicode(text, i)
        if unit is None:
            break
        char, i = unit
        out.append(char)
    return "".join(out), len(text), False


def _unicode(text: str, i: int) -> tuple[str, int] | None:
    """A \\uXXXX escape at `i` (with its low surrogate, if it is a high one); None while incomplete."""
    digits = text[i + 2 : i + 6]
    if len(digits) < 4:
        return None
    try:
        code = int(digits, 16)
    except ValueError:
        return "\ufffd", i + 6
    if 0xD800 <= code < 0xDC00:
        low = text[i + 6 : i + 12]
        if len(low) < 6:
            return None
        try:
            return json.loads(f'"{text[i : i + 12]}"'), i + 12
        except ValueError:
            return "\ufffd", i + 6
    return chr(code), i + 6


def _value_end(text: str, i: int) -> int | None:
    """The index after the value starting at `i`; None if it has not finished arriving."""
    if text[i] == '"':
        _, end, done = _string(text, i)
        return end if done else None
    if text[i] in "{[":
        depth, j = 0, i
        while j < len(text):
            char = text[j]
            if char == '"':
                _, j, done = _string(text, j)
                if not done:
                    return None
                continue
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return None
    j = i
    while j < len(text) and text[j] not in ",}" + _WHITESPACE:
        j += 1
    return j if j < len(text) else None
