"""Plain-text renderings of what commands return, shared by the terminal and the CLI (platform adapters
render the same data in their own formats)."""

from __future__ import annotations

from membot.agent.agent import MemoryReport
from membot.bot.wording import counted

# Said when answering a message failed on our side (the error itself goes to the log, not to the user).
SORRY_ANSWERING = "Sorry, something went wrong on my side while answering. Please try again."
#: What an export file is, said beside it on every platform.
EXPORT_NOTE = "Everything {whose}, as one file. `membot memory import` restores it, here or on another membot."


def forget_warning(whose: str, export: str, again: str) -> str:
    """What /forget says before it deletes anything: `export` is how to keep a copy here, `again` how to go on."""
    return (f"This deletes {whose} and everything it holds: core memory, every message, its archival passages, "
            f"reminders and files. It cannot be undone ({export} first keeps a copy). {again}")


def entities_text(report: MemoryReport) -> str:
    """The agent's most talked-about entities, best first, with how many messages named each."""
    return ", ".join(f"{e.name} ({e.mentions})" for e in report.entities) or "none yet"


def facts_text(report: MemoryReport) -> str:
    """The newest facts that hold now, one per line, and how many more there are."""
    if not report.facts:
        return "none yet"
    more = report.fact_count - len(report.facts)
    return "\n".join(report.facts) + (f"\n… and {more} more (the agent finds them with knowledge_search)" if more else "")


def memory_text(report: MemoryReport, *, block_chars: int | None = None) -> str:
    pct = round(100 * report.context_tokens / report.context_window) if report.context_window else 0
    lines = [f"Agent {report.name} (persona: {report.persona_name})"]
    for label, (value, limit) in report.blocks.items():
        shown = value if block_chars is None or len(value) <= block_chars else value[:block_chars] + " …"
        lines += [f"--- {label} ({len(value)}/{limit} characters)", shown or "(empty)"]
    lines += [
        "---",
        f"Recall memory: {counted(report.recall_messages, 'message')}",
        f"Archival memory: {counted(report.archival_passages, 'passage')} of its own",
        f"Attached sources: {', '.join(report.sources) if report.sources else 'none'}",
        f"Entities (most talked about): {entities_text(report)}",
        f"Facts that hold now: {facts_text(report)}",
        f"Context: {report.context_tokens} of {report.context_window} tokens ({pct}%), "
        f"{counted(report.context_messages, 'message')} in context",
    ]
    if report.summary_hidden:
        lines.append(f"Summary of {counted(report.summary_hidden, 'earlier message')}: {report.summary}")
    return "\n".join(lines)
