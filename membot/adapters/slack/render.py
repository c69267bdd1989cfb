"""Pure text and Block Kit helpers for the Slack adapter: no I/O, so every rule here is unit-tested.

Slack's text format is "mrkdwn" with three reserved characters (&, <, >). Everything the agent writes is
escaped before it is posted, so a reply can never smuggle in `<!channel>` or a fake link; everything users
write is turned back into plain text before the agent sees it.
"""

from __future__ import annotations

import re
from typing import Any

from membot.agent.agent import MemoryReport
from membot.agent.events import Event
from membot.agent.sources.loader import FileOutcome
from membot.bot.monologue import monologue_line
from membot.bot.views import entities_text, facts_text
from membot.bot.wording import counted

#: Slack truncates chat.postMessage text past 40,000 characters and advises staying under 4,000;
#: a little headroom keeps every piece readable as one message.
MESSAGE_LIMIT = 3_900
#: Section blocks refuse text over 3,000 characters; section fields over 2,000; headers over 150.
SECTION_LIMIT = 3_000
FIELD_LIMIT = 2_000
HEADER_LIMIT = 150
#: One monologue item (a long search result, say) is cut here so a step's log stays readable.
MONOLOGUE_ITEM_LIMIT = 1_500

_SLACK_MARKUP = re.compile(r"<([^<>\n]*)>")
_USER_ARG = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|([^>]*))?>$|^([UW][A-Z0-9]{2,})$")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def escape(text: str) -> str:
    """Text for a Slack message: the three control characters as the entities Slack expects."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain_text(text: str, bot_user_id: str | None = None) -> str:
    """What a user wrote, as the agent should read it: the bot's own mention removed, other mentions,
    channels and links in readable form, entities decoded."""

    def readable(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            if bot_user_id and target[1:] == bot_user_id:
                return ""
            return "@" + (label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
            return label or "@" + target[1:].split("^", 1)[0]
        if label and label != target.removeprefix("mailto:"):
            return f"{label} ({target})"
        return target.removeprefix("mailto:")

    cleaned = _SLACK_MARKUP.sub(readable, text)
    return _unescape(cleaned).strip()


def parse_user_arg(text: str) -> tuple[str, str] | None:
    """A slash-command argument naming one user: `<@U2|bob>` (Slack escapes mentions in commands that
    ask it to), `<@U2>`, or a bare id. Returns (user id, name as typed) or None."""
    match = _USER_ARG.match(text.strip())
    if match is None:
        return None
    if match.group(3):
        return match.group(3), ""
    return match.group(1), match.group(2) or ""


def _cut_point(text: str, limit: int) -> int:
    """Where to end the next piece (at most `limit` characters) of a longer text: the last paragraph
    break, else line break, else sentence end or space, as long as that keeps at least half the limit;
    else a hard cut."""
    window = text[: limit + 1]  # a break right after the limit still makes a full piece
    for separator in ("\n\n", "\n", ". ", " "):
        at = window.rfind(separator)
        end = at + (1 if separator == ". " else 0)
        if limit // 2 <= at and end <= limit:
            return end
    # Never split an entity (&amp; …) that escape() produced: Slack would show the halves as text.
    tail = _ENTITY_TAIL.search(text[:limit])
    return tail.start() if tail is not None and tail.start() > 0 else limit


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into pieces of at most `limit` characters, on paragraph or line boundaries where it
    can. Blank input gives no pieces."""
    if limit < 10:
        raise ValueError("limit too small to split sensibly")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        piece = rest[:cut].rstrip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Drop a half-cut entity (&am…) rather than show it as text.
    return _ENTITY_TAIL.sub("", text[: limit - 1]).rstrip() + "…"


def monologue_text(event: Event) -> str | None:
    """A monologue event as one line of plain text (clipped); None for what the user sees."""
    body = monologue_line(event)
    return None if body is None else _clip(body, MONOLOGUE_ITEM_LIMIT)


def tagged(user_id: str, line: str, where: str = "") -> str:
    """A monologue line for the log channel, tagged with whose agent it was (the mention renders as the
    user's current name) and, given, where its step was (`where` is mrkdwn already: "DM", "<#C123>")."""
    return f"[<@{user_id}>]{f' [{where}]' if where else ''} {escape(line)}"


def upload_summary(outcome: FileOutcome, name: str) -> str:
    """The answer in the thread after an upload (plain text; the caller escapes it)."""
    if outcome.failed:
        return f"{outcome.reason.rstrip('.')}. Nothing was loaded."
    if outcome.status == "duplicate":
        return f"{name} was loaded before; it is attached to your agent."
    pages = (
        f" from {counted(outcome.pages, 'page')}"
        if name.lower().endswith(".pdf")
        else ""
    )
    return f"Loaded {name}: {counted(outcome.passages, 'passage')}{pages}, attached to your agent."


def memory_blocks(report: MemoryReport, owner: str) -> list[dict[str, Any]]:
    """The /memory view: a header, one section per core block, the counts, and the summary if any."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"Memory of {owner}", HEADER_LIMIT), "emoji": True},
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": escape(_clip(f"Agent {report.name}, persona {report.persona_name}", FIELD_LIMIT)),
                }
            ],
        },
    ]
    for label, (value, limit) in report.blocks.items():
        heading = f"*{escape(label)}* ({len(value):,}/{limit:,} characters)\n"
        body = escape(value) if value else "_(empty)_"
        # Clip after escaping: the 3,000-character limit applies to what Slack receives.
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(heading + body, SECTION_LIMIT)}}
        )
    pct = round(100 * report.context_tokens / report.context_window) if report.context_window else 0
    sources = ", ".join(report.sources) if report.sources else "none"
    fields = [
        f"*Recall memory*\n{counted(report.recall_messages, 'message')}",
        f"*Archival memory*\n{counted(report.archival_passages, 'passage')} of its own",
        f"*Attached sources*\n{escape(sources)}",
        f"*Entities (most talked about)*\n{escape(entities_text(report))}",
        f"*Facts that hold now*\n{escape(facts_text(report))}",
        f"*Context*\n{report.context_tokens:,} of {report.context_window:,} tokens ({pct}%), "
        f"{counted(report.context_messages, 'message')}",
    ]
    blocks.append({"type": "divider"})
    blocks.append(
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f, FIELD_LIMIT)} for f in fields]}
    )
    if report.summary_hidden:
        summary = f"*Summary of {counted(report.summary_hidden, 'earlier message')}*\n{escape(report.summary)}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(summary, SECTION_LIMIT)}})
    return blocks
