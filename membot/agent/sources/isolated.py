"""Reading a PDF in a child process of its own, bounded in CPU time, memory and wall-clock time.

pypdf is pure Python: in a thread, a hostile file holds the GIL for long stretches and lags the event loop,
and its memory is the bot's. A child per file runs under its own limits (RLIMIT_CPU, RLIMIT_AS), is killed
when it overstays, and costs the bot nothing but the wait. Children are forked from a small server
(multiprocessing's "forkserver") that has pypdf loaded already: a fresh start per file without the import,
and without forking the bot's own threads.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from membot.agent.sources.documents import (
    MAX_PAGES,
    FileRejected,
    ParsedFile,
    needs_too_much_memory,
    read_file_bytes,
    read_path,
    took_too_long,
)

_MB = 1024 * 1024


@dataclass(frozen=True)
class ParseLimits:
    """What reading one file may take."""

    cpu_seconds: int = 60
    memory_bytes: int = 1024 * _MB
    wall_seconds: float = 90.0
    max_pages: int = MAX_PAGES


def parse_in_child(filename: str, source: bytes | Path, *, max_bytes: int, limits: ParseLimits) -> ParsedFile:
    """Parses `source` (the file's bytes, or its path) in a child process. Blocking: run it in a thread."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pypdf", "membot.agent.sources.isolated"])
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(send, filename, source, max_bytes, limits), name=f"membot-read {filename}", daemon=True
    )
    try:
        child.start()
        send.close()
        # True when the answer is there, and when the child died without one (the pipe closes).
        if not receive.poll(limits.wall_seconds):
            raise took_too_long(filename)
        try:
            kind, value = receive.recv()
        except EOFError:
            child.join()
            raise _why_it_died(filename, child.exitcode) from None
    finally:
        if child.is_alive():
            child.kill()
        if child.pid is not None:
            child.join()
            child.close()
        receive.close()
    if kind == "rejected":
        raise FileRejected(value)
    return value


def _why_it_died(filename: str, exitcode: int | None) -> FileRejected:
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return took_too_long(filename)
    if exitcode == -signal.SIGSEGV:  # the C parts of the reader, out of address space
        return needs_too_much_memory(filename)
    return FileRejected(f"{filename}: the PDF could not be read (the reader stopped, code {exitcode})")


def _child(send: Connection, filename: str, source: bytes | Path, max_bytes: int, limits: ParseLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The soft limit sends SIGXCPU, which ends the child; the hard one is a backstop a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    try:
        if isinstance(source, Path):
            parsed = read_path(source, max_bytes=max_bytes, max_pages=limits.max_pages)
        else:
            parsed = read_file_bytes(filename, source, max_bytes=max_bytes, max_pages=limits.max_pages)
        answer: tuple[str, object] = ("parsed", parsed)
    except FileRejected as exc:
        answer = ("rejected", exc.reason)
    except MemoryError:
        answer = ("rejected", needs_too_much_memory(filename).reason)
    try:
        send.send(answer)
    except MemoryError:  # the answer itself did not fit
        send.send(("rejected", needs_too_much_memory(filename).reason))
