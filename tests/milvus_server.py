"""A Milvus gRPC server for the test session (tests/milvus_standalone.py) on a loopback port of its own, as an
operator would run one. conftest.py imports the fixture, so that the whole session shares one server.

The port is checked twice: free before the start (a plain bind, which any listener refuses), and after it every
listening socket on it must be the child's own (Linux's /proc), in case another process took it meanwhile.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from membot.agent.store.db import Database
from membot.agent.store.schema import DeploymentRow

START_SECONDS = 60.0
ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listeners(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _own_sockets(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _start(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    log = (folder / f"server-{port}.log").open("wb")
    (folder / "data").mkdir(exist_ok=True)
    command = [sys.executable, str(Path(__file__).with_name("milvus_standalone.py")), str(folder / "data"), str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Milvus server exited: {(folder / f'server-{port}.log').read_text()[-500:]}")
        listening = _listeners(port)
        if listening:
            if listening <= _own_sockets(process.pid):
                return process, port
            process.kill()
            process.wait()
            raise OSError(f"port {port} is also listened on by another process")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"the Milvus server did not listen within {START_SECONDS:.0f} s")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of the session's Milvus server (started on first use, stopped at the end of the run)."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("checking who listens on a port needs Linux's /proc")
    folder = tmp_path_factory.mktemp("milvus-server")
    for attempt in range(ATTEMPTS):
        try:
            process, port = _start(folder)
            break
        except OSError:  # another process took the port between the probe and the start: another port
            if attempt == ATTEMPTS - 1:
                raise
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def fresh_deployment(database_url: str) -> None:
    """Give the test's database a deployment id of its own. Every test shares the session's server, and the
    PostgreSQL tests' databases are clones of one template, deployment id included."""
    db = await Database.open(database_url)
    try:
        await db.write(lambda session: session.execute(update(DeploymentRow).values(id="t" + secrets.token_hex(6))))
    finally:
        await db.close()
