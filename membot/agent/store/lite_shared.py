"""One Milvus Lite per data directory, shared by every membot process that uses it.

Milvus Lite locks its data directory to one process. So no membot process opens it itself: the first that
needs it starts `lite_server` (a detached process serving it over gRPC on loopback) and every process,
that one included, connects to it. Three lock files beside the data directory make this safe:

- `<dir>.users.lock`: every process that uses the server holds a shared lock on it from `attach` until
  `release` (or until it dies: the kernel drops the lock). The server stops once it can take the lock
  exclusively for a while, that is when nobody has used it for a moment; a short `membot chat` that started
  it thus leaves it to `membot serve`.
- `<dir>.start.lock`: finding or starting the server happens under it, so two processes never both start one.
- `<dir>.alive.lock`: the server holds it exclusively for as long as it runs. A record whose server no longer
  holds it is stale (the process was killed), and is replaced.

The record (`<dir>.server.json`) names the port. The server binds port 0 with SO_REUSEPORT off, so the port
is the one the kernel gave it and no other server can share it (gRPC's default would let a second one bind
the same port and take half the calls).

Linux and macOS (fcntl.flock). Every function here blocks: callers run them on a worker thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

START_SECONDS = 60.0
IDLE_SECONDS = 5.0  # kept a moment after the last user, so that commands run one after another share one start  # a cold start imports pyarrow and faiss and replays Milvus Lite's WAL
LOG_LIMIT = 1_000_000  # bytes of server log kept from earlier runs


class SharedLiteError(RuntimeError):
    """The shared server could not be found or started; the message says where and why."""


@dataclass(frozen=True)
class LiteFiles:
    """The files beside a Milvus Lite data directory that the shared server is found by."""

    data: Path

    def _beside(self, suffix: str) -> Path:
        return self.data.with_name(self.data.name + suffix)

    @property
    def record(self) -> Path:
        return self._beside(".server.json")

    @property
    def users(self) -> Path:
        return self._beside(".users.lock")

    @property
    def start(self) -> Path:
        return self._beside(".start.lock")

    @property
    def alive(self) -> Path:
        return self._beside(".alive.lock")

    @property
    def layout(self) -> Path:
        return self._beside(".layout.lock")

    @property
    def log(self) -> Path:
        return self._beside(".server.log")

    def write_record(self, token: str, port: int = 0, error: str = "") -> None:
        """The server's address (or why it could not start), for the process that started it (`token`)."""
        temporary = self._beside(f".server.json.{os.getpid()}")
        record = {"token": token, "pid": os.getpid(), "port": port, "error": error, "data": str(self.data)}
        temporary.write_text(json.dumps(record))
        temporary.replace(self.record)  # readers see the whole record or none

    def read_record(self) -> dict[str, str | int] | None:
        try:
            record = json.loads(self.record.read_text())
            return {"token": str(record["token"]), "port": int(record["port"]), "error": str(record["error"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None


@contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """A blocking flock on `path` (made if missing) for the block's duration."""
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def server_alive(files: LiteFiles) -> bool:
    """Whether a server holds the data directory now (its alive lock is taken)."""
    with files.alive.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing the file drops the probe's lock


class SharedLite:
    """This process's use of the shared server: its URI, held until `release`."""

    def __init__(self, uri: str, users: IO[str]) -> None:
        self.uri = uri
        self._users = users

    @classmethod
    def attach(cls, data: Path, idle_seconds: float = IDLE_SECONDS) -> SharedLite:
        """Use the server of `data`, started now if none runs (to stop once unused for `idle_seconds`)."""
        files = LiteFiles(data)
        data.parent.mkdir(parents=True, exist_ok=True)
        users = files.users.open("a+")
        try:
            # Before looking: a server that is stopping holds this lock exclusively until it is gone.
            fcntl.flock(users, fcntl.LOCK_SH)
            with file_lock(files.start):
                port = _running_port(files) or _start(files, idle_seconds)
        except BaseException:
            users.close()
            raise
        return cls(f"http://127.0.0.1:{port}", users)

    def release(self) -> None:
        self._users.close()


def _running_port(files: LiteFiles) -> int | None:
    if not server_alive(files):
        return None  # none, or a stale record of a server that died
    deadline = time.monotonic() + 5
    while (record := files.read_record()) is None or not record["port"]:  # one started by hand, still starting
        if time.monotonic() > deadline:
            raise SharedLiteError(f"A Milvus Lite server holds {files.data} but left no address in {files.record}.")
        time.sleep(0.05)
    return int(record["port"])


def _start(files: LiteFiles, idle_seconds: float) -> int:
    files.record.unlink(missing_ok=True)
    if files.log.exists() and files.log.stat().st_size > LOG_LIMIT:
        files.log.unlink()
    token = secrets.token_hex(8)
    with files.log.open("ab") as log:
        # The server detaches itself (a second fork, in a session of its own) and this child returns at once:
        # the server is nobody's child, so no process has to reap it, and no Ctrl-C of this terminal reaches it.
        subprocess.run(
            [sys.executable, "-m", "membot.agent.store.lite_server", str(files.data), token, str(idle_seconds)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Arrow's own allocator keeps more memory than malloc; read when pyarrow loads.
            env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system")},
            check=True,
            timeout=30,
        )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        record = files.read_record()
        if record is not None and record["token"] == token:
            if record["error"]:
                raise SharedLiteError(f"Could not start Milvus Lite for {files.data}: {record['error']}")
            return int(record["port"])
        time.sleep(0.02)
    raise SharedLiteError(f"Milvus Lite for {files.data} did not start within {START_SECONDS:.0f} s (log: {files.log})")
