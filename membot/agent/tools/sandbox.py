"""The agent's own folder for the text-file extras. Names are relative paths inside it: absolute paths, `..`
and symlinks are refused, so a model can never read or write anything else on the machine."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 1024 * 1024
MAX_READ_CHARS = 20_000


class SandboxError(ValueError):
    pass


def sandbox_dir(root: Path, agent_id: int) -> Path:
    return root / f"agent-{agent_id}"


def resolve(folder: Path, name: str) -> Path:
    """The file `name` inside `folder`, or SandboxError. Blocking (touches the disk)."""
    if not name or "\x00" in name or len(name) > 255:
        raise SandboxError("give a short relative file name, like notes.txt")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise SandboxError(f"{name!r} is outside your folder; use a relative name like notes.txt")
    folder.mkdir(parents=True, exist_ok=True)
    current = folder
    for part in path.parts:
        current = current / part
        if current.is_symlink():
            raise SandboxError(f"{name!r} is a link; links are not followed")
    real_folder = folder.resolve()
    if not current.resolve().is_relative_to(real_folder):
        raise SandboxError(f"{name!r} is outside your folder")
    return current


def read_lines(folder: Path, name: str, line_start: int, num_lines: int) -> str:
    path = resolve(folder, name)
    if not path.is_file():
        raise SandboxError(f"there is no file {name!r} in your folder")
    if line_start < 1 or num_lines < 1:
        raise SandboxError("line_start and num_lines start at 1")
    # O_NOFOLLOW: a link swapped in after the check is still refused.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        lines = fh.read(MAX_FILE_BYTES).splitlines()
    chosen = lines[line_start - 1 : line_start - 1 + num_lines]
    text = "\n".join(chosen)
    if len(text) > MAX_READ_CHARS:
        text = text[:MAX_READ_CHARS] + " … [cut; read fewer lines]"
    return text or f"(no lines from {line_start}; the file has {len(lines)} lines)"


def append_text(folder: Path, name: str, content: str) -> int:
    path = resolve(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size if path.exists() else 0
    data = (content if content.endswith("\n") else content + "\n").encode("utf-8")
    if size + len(data) > MAX_FILE_BYTES:
        raise SandboxError(f"{name} would pass the {MAX_FILE_BYTES // 1024} KB file limit")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "ab") as fh:
        fh.write(data)
    return size + len(data)
