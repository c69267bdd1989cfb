"""The agent's own folder for the text-file extras. Names are relative paths inside it: absolute paths, `..`
and symlinks are refused, so a model can never read or write anything else on the machine. Only regular
files with a single link are opened (a hard link would reach a file elsewhere; a FIFO would block), and the
folder as a whole has a quota of bytes and entries."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 1024 * 1024
MAX_READ_CHARS = 20_000


class SandboxError(ValueError):
    pass


@dataclass(frozen=True)
class Quota:
    """What one agent's folder may hold in all: bytes of its files, and files plus sub-folders."""

    max_bytes: int
    max_entries: int


def sandbox_dir(root: Path, agent_id: int, created_at: datetime) -> Path:
    # The creation time keeps a new database's agent 1 out of an older database's agent-1 folder.
    return root / f"agent-{agent_id}-{created_at:%Y%m%dT%H%M%S%f}"


def resolve(folder: Path, name: str) -> Path:
    """The file `name` inside `folder`, or SandboxError. Blocking (touches the disk)."""
    if not name or "\x00" in name or len(name) > 255:
        raise SandboxError("give a short relative file name, like notes.txt")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise SandboxError(f"{name!r} is outside your folder; use a relative name like notes.txt")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    current = folder
    for part in path.parts:
        current = current / part
        if current.is_symlink():
            raise SandboxError(f"{name!r} is a link; links are not followed")
    real_folder = folder.resolve()
    if not current.resolve().is_relative_to(real_folder):
        raise SandboxError(f"{name!r} is outside your folder")
    return current


def _check_plain(name: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SandboxError(f"{name!r} is not a regular file")
    if info.st_nlink != 1:
        raise SandboxError(f"{name!r} has other links to it; it is not opened")


def _open_plain(path: Path, name: str, flags: int) -> int:
    """An fd on a regular, singly linked file. O_NOFOLLOW refuses a link swapped in after `resolve`;
    O_NONBLOCK keeps a FIFO from blocking the open; fstat checks what was really opened."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise SandboxError(f"{name!r} cannot be opened ({exc.strerror})") from None
    try:
        _check_plain(name, os.fstat(fd))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_lines(folder: Path, name: str, line_start: int, num_lines: int) -> str:
    path = resolve(folder, name)
    if not path.exists() or path.is_dir():
        raise SandboxError(f"there is no file {name!r} in your folder")
    if line_start < 1 or num_lines < 1:
        raise SandboxError("line_start and num_lines start at 1")
    fd = _open_plain(path, name, os.O_RDONLY)
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        lines = fh.read(MAX_FILE_BYTES).splitlines()
    chosen = lines[line_start - 1 : line_start - 1 + num_lines]
    text = "\n".join(chosen)
    if len(text) > MAX_READ_CHARS:
        text = text[:MAX_READ_CHARS] + " … [cut; read fewer lines]"
    return text or f"(no lines from {line_start}; the file has {len(lines)} lines)"


def usage(folder: Path) -> tuple[int, int]:
    """Bytes of the folder's files and how many entries (files and sub-folders) it holds; links not followed."""
    size = entries = 0
    for root, dirs, files in os.walk(folder):
        entries += len(dirs) + len(files)
        for file in files:
            try:
                size += os.lstat(os.path.join(root, file)).st_size
            except OSError:
                continue
    return size, entries


def append_text(folder: Path, name: str, content: str, quota: Quota) -> int:
    path = resolve(folder, name)
    data = (content if content.endswith("\n") else content + "\n").encode("utf-8")
    used, entries = usage(folder)
    new_entries = 0 if path.exists() else _missing_parts(folder, path)
    if entries + new_entries > quota.max_entries:
        raise SandboxError(f"your folder would pass its limit of {quota.max_entries} files and folders")
    if used + len(data) > quota.max_bytes:
        raise SandboxError(f"your folder would pass its limit of {quota.max_bytes // 1024} KB in all")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = _open_plain(path, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "ab") as fh:
        size = os.fstat(fd).st_size
        if size + len(data) > MAX_FILE_BYTES:
            raise SandboxError(f"{name} would pass the {MAX_FILE_BYTES // 1024} KB file limit")
        fh.write(data)
    return size + len(data)


def _missing_parts(folder: Path, path: Path) -> int:
    """How many entries writing `path` creates: the file and any sub-folders on its way."""
    return sum(1 for part in (path, *path.parents) if part.is_relative_to(folder) and part != folder
               and not part.exists())
