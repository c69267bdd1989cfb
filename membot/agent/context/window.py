"""The main context: assembling the prompt, and choosing what leaves it when it is full. Pure logic.

Order, as in MemGPT: system instructions, core memory and memory statistics (one system message), the
summary of evicted history, then the FIFO queue of recent messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from membot.agent.context.tokens import CHARS_PER_TOKEN, TokenCounter
from membot.agent.memory.core import CoreMemory
from membot.agent.memory.entities import ENTITIES_HEADING
from membot.agent.messages import Message, to_openai


@dataclass
class MemoryStats:
    recall_messages: int
    archival_passages: int
    sources: Sequence[str] = ()
    #: The most talked-about entities the step may see, as one line (memory/entities.py's render_entities).
    entities: str = ""


def system_message(instructions: str, core: CoreMemory, stats: MemoryStats, *, private: bool) -> dict[str, Any]:
    """Instructions, memory statistics, the most talked-about entities and core memory; a shared channel's has
    no private block (and its `stats` name only shared entities)."""
    sources = f" Attached data sources: {', '.join(stats.sources)}." if stats.sources else ""
    entities = f"{ENTITIES_HEADING}\n{stats.entities}\n\n" if stats.entities else ""
    text = (
        f"{instructions}\n\n"
        "### Memory statistics\n"
        f"{stats.recall_messages} messages in recall memory, "
        f"{stats.archival_passages} passages in archival memory.{sources}\n\n"
        f"{entities}"
        "### Core memory (limits in characters)\n"
        f"{core.render(private=private)}"
    )
    return {"role": "system", "content": text}


def summary_message(summary: str, hidden: int) -> dict[str, Any] | None:
    if not summary and not hidden:
        return None
    text = (
        f"{hidden} earlier messages are hidden from your context window; conversation_search and "
        f"conversation_search_date still find them. Summary of them: {summary or '(none)'}"
    )
    return {"role": "user", "content": json.dumps({"type": "system_summary", "message": text})}


def cap_content(message: dict[str, Any], cap_tokens: int) -> dict[str, Any]:
    """Cut one oversized message in the prompt (it stays whole in recall memory) with a note saying so."""
    content = message.get("content")
    max_chars = int(cap_tokens * CHARS_PER_TOKEN)
    if not isinstance(content, str) or len(content) <= max_chars:
        return message
    note = f" … [cut here: {len(content) - max_chars} more characters; the whole text is in recall memory]"
    return {**message, "content": content[: max(0, max_chars - len(note))] + note}


def message_cap(window: int) -> int:
    """The most one message may take of the window: a quarter, so that no single paste can fill it."""
    return max(64, window // 4)


def safe_cut(rows: Sequence[Message], cut: int) -> int:
    """Move a cut point forward so the kept part never starts with a tool result (its call would be gone)."""
    while cut < len(rows) and rows[cut].role == "tool":
        cut += 1
    return cut


def choose_eviction(rows: Sequence[Message], sizes: Sequence[int], to_free: int, keep_recent: int) -> int:
    """How many of the oldest messages to evict to free `to_free` tokens, keeping the last `keep_recent`
    when that is enough, and never separating a tool call from its result. Returns 0..len(rows)."""
    if to_free <= 0 or not rows:
        return 0
    limit = max(0, len(rows) - keep_recent)
    freed, cut = 0, 0
    while cut < limit and freed < to_free:
        freed += sizes[cut]
        cut += 1
    if freed < to_free:
        # Keeping the recent messages is not enough: evict them too, all but the newest.
        while cut < len(rows) - 1 and freed < to_free:
            freed += sizes[cut]
            cut += 1
    return safe_cut(rows, cut)


@dataclass
class PromptBudget:
    """The token figures of one agent's prompts, for the decision to summarise and for `/memory`."""

    window: int
    counter: TokenCounter
    #: The tool schemas' tokens: the same schemas go with every call, so they are counted once.
    tool_tokens: int = 0

    def entry(self, row: Message) -> tuple[dict[str, Any], int]:
        """The message as the model sees it (cut if oversized), and its tokens."""
        form = cap_content(to_openai(row), message_cap(self.window))
        return form, self.counter.message(form)

    @property
    def limit(self) -> int:
        # Room is left for the model's answer.
        return self.window - min(1024, self.window // 8)

    def size(self, messages: Sequence[dict[str, Any]]) -> int:
        """Tokens of these messages plus the tool schemas."""
        return self.counter.messages(messages) + self.tool_tokens


class ContextQueue:
    """The FIFO queue of the context window: its messages, oldest first, each beside its prompt form and tokens.
    A stored message never changes, so it is converted and counted once, when it joins, not on every model call
    (with a real tokenizer that adds up, and at 200 users a lookup per message per call cost a tenth of the
    event loop)."""

    def __init__(self, budget: PromptBudget, rows: Sequence[Message] = ()) -> None:
        self._budget = budget
        self.rows: list[Message] = []
        self.forms: list[dict[str, Any]] = []
        self.sizes: list[int] = []
        self.tokens = 0  # the sum of `sizes`
        self.extend(rows)

    def append(self, row: Message) -> None:
        form, tokens = self._budget.entry(row)
        self.rows.append(row)
        self.forms.append(form)
        self.sizes.append(tokens)
        self.tokens += tokens

    def extend(self, rows: Sequence[Message]) -> None:
        for row in rows:
            self.append(row)

    def seen(self, private: bool) -> tuple[list[dict[str, Any]], int]:
        """The prompt forms and their tokens as a step sees them: all of them in a private step, none of the
        private messages in a shared channel. A step's messages share its place, so a call and its results are
        kept or left out together."""
        if private:
            return self.forms, self.tokens
        shown = [i for i, row in enumerate(self.rows) if not row.private]
        return [self.forms[i] for i in shown], sum(self.sizes[i] for i in shown)

    def drop_oldest(self, count: int) -> list[Message]:
        """Take the `count` oldest messages out of the queue; returns them."""
        dropped = self.rows[:count]
        self.tokens -= sum(self.sizes[:count])
        del self.rows[:count], self.forms[:count], self.sizes[:count]
        return dropped

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Message]:
        return iter(self.rows)
