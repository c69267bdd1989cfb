"""Summarising evicted history with a separate model call, its own prompt and a word limit.

When the call fails, a short mechanical note takes its place: eviction never waits on the model, so a
full context can always be relieved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from membot.agent.context.tokens import CHARS_PER_TOKEN
from membot.agent.llm.client import ContextOverflow, ModelClient, ModelUnavailable
from membot.agent.messages import Message

SUMMARY_INSTRUCTIONS = (
    "You condense the older part of a conversation between an AI companion and a user, so the companion can "
    "keep its bearings after those messages leave its working memory. Write in the companion's first person "
    "('I', 'the user'). Keep names, facts about the user, decisions, promises, open questions and what was "
    "being done; drop greetings and small talk. Write plain prose of at most {words} words, nothing else."
)


def _line(row: Message) -> str:
    if row.role == "user":
        try:
            packed = json.loads(row.content or "")
            kind, text = packed.get("type", "user_message"), packed.get("message", "")
        except (json.JSONDecodeError, AttributeError):
            kind, text = "user_message", row.content or ""
        who = "User" if kind == "user_message" else f"System ({kind})"
        return f"{who}: {text}"
    if row.role == "assistant":
        calls = "; ".join(
            f"{c['function']['name']}({c['function'].get('arguments', '')})" for c in row.tool_calls or []
        )
        return f"Companion (thinking): {row.content or ''}" + (f" -> {calls}" if calls else "")
    return f"Function result: {row.content or ''}"


def transcript(rows: Sequence[Message], max_chars: int) -> str:
    """The rows as lines, each cut to a fair share of the budget so one huge message cannot crowd out the rest."""
    if not rows:
        return ""
    share = max(200, max_chars // len(rows))
    lines = []
    for row in rows:
        line = _line(row)
        lines.append(line if len(line) <= share else line[:share] + " …")
    text = "\n".join(lines)
    return text[-max_chars:] if len(text) > max_chars else text


_SET_ASIDE = re.compile(r"\((\d+) further messages were set aside without a summary; [^)]*\)$")


def fallback_summary(previous: str, evicted: int) -> str:
    """The summary when the model could not write one: the previous one and a count of what was set aside. The
    count of consecutive failures is added up in one note, so a summariser that stays down cannot grow it."""
    earlier = _SET_ASIDE.search(previous)
    if earlier:
        evicted += int(earlier.group(1))
        previous = previous[: earlier.start()].rstrip()
    note = f"({evicted} further messages were set aside without a summary; search them with conversation_search.)"
    return f"{previous} {note}".strip()


async def summarise(
    model: ModelClient, previous: str, rows: Sequence[Message], *, words: int, budget_tokens: int
) -> tuple[str, bool]:
    """The new summary (covering `previous` and `rows`) and whether the model wrote it."""
    budget_chars = int(max(256, budget_tokens - 100 - words * 2) * CHARS_PER_TOKEN)
    earlier = f"Summary of what came before: {previous}\n\n" if previous else ""
    room = max(200, budget_chars - len(earlier))
    prompt = [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS.format(words=words)},
        {"role": "user", "content": f"{earlier}Messages to condense:\n{transcript(rows, room)}"[:budget_chars]},
    ]
    try:
        result = await model.chat(prompt)
    except (ModelUnavailable, ContextOverflow):
        return fallback_summary(previous, len(rows)), False
    text = " ".join((result.content or "").split())
    if not text:
        return fallback_summary(previous, len(rows)), False
    # The word limit is the model's to keep, but enforced here too.
    limited = text.split(" ")[: words + words // 4]
    return " ".join(limited), True
