"""A user's memory as one file they own: export an agent whole, and import such a file as a user's agent, on
this deployment or another.

The file is JSON (gzip-compressed when large; both read back). It holds everything the agent holds: its
settings and summaries (`agent`), its core blocks, every message of recall memory, its own archival passages
(text and metadata, not embeddings: the importing deployment embeds them with its own model), its wake-ups,
the names of its attached sources, and the text files of its sandbox folder. Times are ISO 8601, naive UTC.
See README "Your memory: export, import, forget".

An import builds the new agent beside everything else and links it to its user last, in one transaction that
also deletes the agent it replaces (if asked): a failure on the way leaves the user's old agent as it was.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from membot.agent.engine import Engine
from membot.agent.memory.archival import agent_owner
from membot.agent.store import agent_data
from membot.agent.store.passages import PassageRow
from membot.agent.tools import sandbox
from membot.bot import agent_file
from membot.bot.erase import erase_agent, erase_passages, sandbox_of
from membot.bot.identity import UserRef
from membot.bot.wording import counted

log = logging.getLogger(__name__)

FORMAT = "membot-agent"
VERSION = 1
#: Above this, an export is gzip-compressed (chat platforms limit the size of a file).
COMPRESS_ABOVE = 4 * 1024 * 1024


class PortableError(ValueError):
    """A file that cannot be imported, or a user who cannot be given it; the message says what to do."""


@dataclass
class Imported:
    """What an import made, to tell the user."""

    agent_id: int
    blocks: int
    messages: int
    passages: int
    wakeups: int
    files: int
    missing_sources: list[str] = field(default_factory=list)

    def describe(self, whose: str) -> str:
        parts = [counted(self.blocks, "core block"), counted(self.messages, "message"),
                 counted(self.passages, "archival passage"), counted(self.wakeups, "wake-up"),
                 counted(self.files, "sandbox file")]
        text = f"Imported {', '.join(parts)} as the agent of {whose}."
        if self.missing_sources:
            text += (" Not attached (no such source here, or not theirs to attach): "
                     f"{', '.join(self.missing_sources)}; load and /attach them again.")
        return text


# ----- export ----------------------------------------------------------------------------------------------------


async def export_agent(engine: Engine, agent_id: int, user: UserRef) -> dict[str, Any]:
    """Everything the agent holds, as plain data (the caller holds its lease, so it is one consistent state)."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "user": {"platform": user.platform, "scope": user.scope, "user_id": user.user_id,
                 "display_name": user.display_name},
    }
    data.update(await engine.db.read(partial(agent_data.dump, agent_id=agent_id)))
    passages = []
    for private in (False, True):
        for row in await engine.passages.rows_of(agent_owner(agent_id, private=private)):
            passages.append({"private": private, "text": row.text, "filename": row.filename, "page": row.page,
                             "doc_hash": row.doc_hash, "created_at": _iso(row.created_at)})
    data["passages"] = passages
    folder = await sandbox_of(engine, agent_id)
    data["files"] = [] if folder is None else await asyncio.to_thread(_read_files, folder)
    return data


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


def _read_files(folder: Path) -> list[dict[str, str]]:
    """Blocking: the sandbox's text files, by path inside it (the sandbox holds text only; anything else, or a
    link, is left out)."""
    files = []
    if not folder.is_dir():
        return files
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            files.append({"path": path.relative_to(folder).as_posix(), "text": path.read_text("utf-8")})
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("export: sandbox file %s left out: %s", path, exc)
    return files


def encode(data: dict[str, Any]) -> tuple[bytes, str]:
    """Blocking: the file's bytes and its suffix (`.json`, or `.json.gz` when large)."""
    raw = json.dumps(data, ensure_ascii=False, indent=1).encode()
    if len(raw) > COMPRESS_ABOVE:
        return gzip.compress(raw, mtime=0), ".json.gz"
    return raw, ".json"


def file_name(user: UserRef, suffix: str = ".json") -> str:
    """A name for an export that says whose and when, safe on every file system."""
    who = "".join(c if c.isalnum() or c in "-_" else "_" for c in (user.display_name or user.user_id))[:40]
    return f"membot-memory-{who or 'agent'}-{datetime.now(UTC):%Y%m%d-%H%M%S}{suffix}"


# ----- import ----------------------------------------------------------------------------------------------------


def decode(raw: bytes) -> dict[str, Any]:
    """Blocking: the file read and checked, or PortableError naming what is wrong with it."""
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise PortableError(f"This is not a membot memory export (not readable JSON: {exc}).") from None
    if agent_file.is_agent_file(data):  # Letta's .af
        try:
            data = agent_file.convert(data, VERSION)
        except (agent_file.AgentFileError, KeyError, TypeError, AttributeError) as exc:
            raise PortableError(f"This Agent File cannot be imported: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PortableError("This is not a membot memory export (no \"format\": \"membot-agent\"); "
                            "export one with /memory export or `membot memory export`.")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise PortableError(f"This export is of format version {data.get('version')!r}; this membot reads up to "
                            f"{VERSION}. Import it with a newer membot.")
    _check(data)
    return data


def _check(data: dict[str, Any]) -> None:
    """Every section has the shape an import needs; a hand-edited file gets told where it is broken."""
    agent = data.get("agent")
    if not isinstance(agent, dict) or not all(isinstance(agent.get(k), str) for k in ("persona_name", "human_name")):
        raise PortableError("The export has no usable \"agent\" section (persona_name and human_name).")
    needs = {"core_blocks": ("label", "value"), "messages": ("role", "kind"), "passages": ("text",),
             "wakeups": ("kind", "due_at"), "sources": ("scope", "name"), "files": ("path", "text")}
    for section, keys in needs.items():
        rows = data.setdefault(section, [])
        if not isinstance(rows, list):
            raise PortableError(f"The export's {section!r} is not a list.")
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or any(key not in row for key in keys):
                raise PortableError(f"Entry {number} of the export's {section!r} lacks {', '.join(keys)}.")
    for number, row in enumerate(data["messages"], 1):
        if set(row) != set(data["messages"][0]):
            raise PortableError(f"Message {number} of the export has other fields than the first one.")


async def import_agent(engine: Engine, data: dict[str, Any], user: UserRef, replaces: int | None) -> Imported:
    """`data` (as `decode` gives it) as `user`'s agent. `replaces`: their current agent, deleted in the same
    transaction that links the new one (the caller holds its lease); None when they have none."""
    passages = data["passages"]
    for block in data["core_blocks"]:  # an Agent File's blocks come without membot's limit
        block.setdefault("char_limit", max(engine.config.core_memory_limit, len(str(block["value"]))))
    # The slow part that can fail (the embedding model) first, before anything is written.
    vectors = await engine.embedder.embed([str(p["text"]) for p in passages]) if passages else []
    agent_id = await engine.db.write(partial(agent_data.create, data=data, passages=len(passages)))
    try:
        for private in (False, True):
            rows = [_passage_row(p, vector) for p, vector in zip(passages, vectors, strict=True)
                    if bool(p.get("private")) == private]
            await engine.passages.insert(agent_owner(agent_id, private=private), rows)
        await engine.passages.flush()
        folder = await sandbox_of(engine, agent_id)
        files = 0 if folder is None else await asyncio.to_thread(_write_files, folder, data["files"])
        old_folder = await sandbox_of(engine, replaces) if replaces is not None else None
        missing = await engine.db.write(partial(_link, agent_id=agent_id, data=data, user=user, replaces=replaces))
    except BaseException as exc:
        await asyncio.shield(_undo(engine, agent_id))
        if isinstance(exc, IntegrityError):
            raise PortableError(already_has(user)) from None
        raise
    engine.catalog.changes += 1
    if replaces is not None:
        try:  # its rows are gone already: what is left is unreachable, and removed here
            await erase_passages(engine, replaces)
            if old_folder is not None:
                await asyncio.to_thread(_remove_tree, old_folder)
        except Exception as exc:
            log.warning("import: the replaced agent %s left passages or files behind: %s", replaces, exc)
    return Imported(agent_id, len(data["core_blocks"]), len(data["messages"]), len(passages),
                    len(data["wakeups"]), files, missing)


def already_has(user: UserRef) -> str:
    return (f"{user.display_name or user.user_id} already has an agent here. Nothing was imported; add --replace "
            "to replace it (its memory is deleted), or export it first.")


def _passage_row(passage: dict[str, Any], vector: list[float]) -> PassageRow:
    created = passage.get("created_at")
    when = datetime.fromisoformat(created).replace(tzinfo=UTC).timestamp() if isinstance(created, str) else None
    return PassageRow(text=str(passage["text"]), embedding=vector, filename=str(passage.get("filename") or ""),
                      page=int(passage.get("page") or 0), doc_hash=str(passage.get("doc_hash") or ""),
                      created_at=when)


def _link(session: Session, agent_id: int, data: dict[str, Any], user: UserRef, replaces: int | None) -> list[str]:
    if replaces is not None:
        agent_data.erase(session, replaces)
    who = {"platform": user.platform, "scope": user.scope, "user_id": user.user_id,
           "display_name": user.display_name[:200]}
    return agent_data.link(session, agent_id, data, who, viewer=":".join(user.key))


def _write_files(folder: Path, files: list[dict[str, Any]]) -> int:
    """Blocking: the sandbox's files, each checked by the sandbox's own rules (no path leaves the folder)."""
    for entry in files:
        try:
            path = sandbox.resolve(folder, str(entry["path"]))
        except sandbox.SandboxError as exc:
            raise PortableError(f"The export's sandbox file {entry['path']!r} cannot be restored: {exc}.") from None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(str(entry["text"]), "utf-8")
        os.chmod(path, 0o600)
    return len(files)


def _remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


async def _undo(engine: Engine, agent_id: int) -> None:
    """A half-made import goes again, whole; a failure here is logged (the agent has no user, nobody sees it)."""
    try:
        await erase_agent(engine, agent_id)
    except Exception as exc:
        log.warning("import: could not remove the half-made agent %s: %s", agent_id, exc)
