"""Pure text work for Discord: splitting long messages, monologue lines, the memory embed, and cleaning
the bot's mention out of what users write. No I/O here, so all of it is unit-testable."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import discord

from membot.agent.agent import MemoryReport
from membot.agent.events import Event
from membot.bot.monologue import monologue_line as plain_monologue_line
from membot.bot.views import entities_text, facts_text
from membot.bot.wording import counted

#: Discord's limit for a message's content.
MESSAGE_LIMIT = 2000
FENCE = "```"
CLOSE = "\n" + FENCE
#: One monologue item (a long function result, say) is clipped: the log channel is for following along.
MONOLOGUE_ITEM = 700
#: Embed limits: a field value, and the whole embed.
FIELD_LIMIT = 1024
EMBED_LIMIT = 6000

_MENTION = re.compile(r"<@!?(\d+)>")
_LANGUAGE = re.compile(r"[\w+#.-]{1,20}")


def units(text: str) -> int:
    """Length in UTF-16 code units: never less than the character count, so a part measured this way fits
    Discord's limit whether it counts characters or UTF-16 units (an emoji can be two)."""
    return len(text.encode("utf-16-le")) // 2


def _opener(line: str) -> str:
    """The fence to reopen a code block with, keeping its language so highlighting survives the split."""
    stripped = line.strip()
    if stripped.startswith(FENCE):
        match = _LANGUAGE.match(stripped[len(FENCE) :])
        return FENCE + (match.group(0) if match else "")
    return FENCE


def _take(text: str, room: int) -> int:
    """How many characters of `text` fit in `room` units, preferring to end after a space."""
    used = cut = 0
    for ch in text:
        step = 2 if ord(ch) > 0xFFFF else 1
        if used + step > room:
            break
        used += step
        cut += 1
    if cut < len(text):
        space = text.rfind(" ", 0, cut)
        if space >= cut // 2:
            cut = space + 1
    return max(cut, 1)


class _Parts:
    """Accumulates lines into parts of at most `limit` units. Every part is closed on its own: a code
    block open at a split is closed at the end of the part and reopened at the start of the next."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done: list[str] = []
        self.lines: list[str] = []
        self.size = 0
        self.fence: str | None = None  # the opener of the code block open at the end of `lines`
        self.fresh = 0  # lines at the start of the part that only reopen a block

    def fits(self, line: str, fence_after: str | None) -> bool:
        added = units(line) + (1 if self.lines else 0)
        return self.size + added + (len(CLOSE) if fence_after else 0) <= self.limit

    def add(self, line: str) -> None:
        self.size += units(line) + (1 if self.lines else 0)
        self.lines.append(line)

    def flush(self) -> None:
        if len(self.lines) > self.fresh:
            body = "\n".join(self.lines) + (CLOSE if self.fence else "")
            if body.strip():
                self.done.append(body)
        self.lines = [self.fence] if self.fence else []
        self.size = units(self.fence) if self.fence else 0
        self.fresh = len(self.lines)

    def add_long(self, line: str) -> None:
        """A line longer than a part: cut it, each piece in its own part if need be."""
        reserve = len(CLOSE)  # always: the line itself may open a block that this part must close
        rest = line
        while rest:
            room = self.limit - self.size - (1 if self.lines else 0) - reserve
            if room < self.limit // 4 and len(self.lines) > self.fresh:
                self.flush()
                continue
            cut = _take(rest, room)
            self.add(rest[:cut])
            rest = rest[cut:]
            if rest:
                self.flush()


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` as messages of at most `limit` (UTF-16 units), split at line ends where possible, never
    leaving a ``` code block unbalanced in any part. Empty or blank text gives no messages."""
    text = text.strip("\n")
    if not text.strip():
        return []
    if units(text) <= limit:
        return [text]
    parts = _Parts(limit)
    for line in text.split("\n"):
        toggles = line.count(FENCE) % 2 == 1
        fence_after = (None if parts.fence else _opener(line)) if toggles else parts.fence
        if not parts.fits(line, fence_after):
            parts.flush()
        if parts.fits(line, fence_after):
            parts.add(line)
        else:
            parts.add_long(line)
        parts.fence = fence_after
    parts.flush()
    return parts.done


def strip_mentions(content: str, bot_id: int, names: Mapping[int, str]) -> str:
    """What the user said to the bot: its own mention removed, other users' mentions as @name (the agent
    cannot resolve raw ids)."""

    def replace(match: re.Match[str]) -> str:
        user_id = int(match.group(1))
        return f"@{names[user_id]}" if user_id in names else match.group(0)

    content = re.sub(rf"<@!?{bot_id}>[ \t]*", "", content)
    return _MENTION.sub(replace, content).strip()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def monologue_line(event: Event) -> str | None:
    """One line of the private monologue for an event the user does not see; None for visible ones."""
    body = plain_monologue_line(event)
    if body is None:
        return None
    # Escaped: stray backticks or asterisks in a function result must not restyle the rest of the log.
    return discord.utils.escape_markdown(_clip(body, MONOLOGUE_ITEM))


def monologue_tag(name: str, user_id: str) -> str:
    return f"**{discord.utils.escape_markdown(name or user_id)}** ({user_id})"


def _fields(report: MemoryReport, block_chars: int) -> Iterator[tuple[str, str]]:
    for label, (value, limit) in report.blocks.items():
        shown = value if len(value) <= block_chars else value[: block_chars - 1] + "…"
        yield f"{label} ({len(value)}/{limit} characters)", shown or "(empty)"
    yield "Recall memory", counted(report.recall_messages, "message")
    yield "Archival memory", f"{counted(report.archival_passages, 'passage')} of its own"
    yield "Attached sources", _clip(", ".join(report.sources), FIELD_LIMIT) if report.sources else "none"
    yield "Entities (most talked about)", _clip(entities_text(report), FIELD_LIMIT)
    yield "Facts that hold now", _clip(facts_text(report), FIELD_LIMIT)
    pct = round(100 * report.context_tokens / report.context_window) if report.context_window else 0
    yield (
        "Context window",
        f"{report.context_tokens:,} of {report.context_window:,} tokens ({pct}%), "
        f"{counted(report.context_messages, 'message')} in context",
    )
    if report.summary_hidden:
        yield f"Summary of {counted(report.summary_hidden, 'earlier message')}", _clip(report.summary, block_chars) or "(empty)"


def memory_embed(report: MemoryReport, whose: str) -> discord.Embed:
    """The memory report as an embed: one field per core block (clipped to a field's 1,024 characters),
    then the counts, the attached sources, the context use and the summary."""
    block_chars = FIELD_LIMIT
    while True:
        embed = discord.Embed(
            title=_clip(f"Memory of {whose}'s agent", 256),
            description=_clip(f"Agent {report.name} · persona {report.persona_name}", 4096),
            colour=discord.Colour.blurple(),
        )
        for name, value in _fields(report, block_chars):
            embed.add_field(name=_clip(name, 256), value=value, inline=False)
        # Two full blocks and a full summary would pass the 6,000 total: shrink them until it fits.
        if len(embed) <= EMBED_LIMIT or block_chars <= 200:
            return embed
        block_chars -= 200
