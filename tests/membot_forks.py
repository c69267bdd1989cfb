"""`membot` child processes forked from an interpreter that imported it once (a "zygote").

Starting `python -m membot` spends most of its time importing (openai, alembic, SQLAlchemy, discord.py). Tests
that run many of them fork each from a server that did those imports already: every child is still a process
of its own, on its own pipes, environment and working directory, killable with SIGKILL, and it runs
`membot.bot.cli.main` and exits as `python -m membot` does. A test proving that `python -m membot` itself starts
uses tests/cli_helpers.py's `start`/`membot`, which exec a fresh interpreter.

`python tests/membot_forks.py SOCKET` is the server: it forks, per connection, a reaper that forks the child,
reports the child's pid and then its exit code on the connection. It stops when its stdin closes (its test
process ended).
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fakes.openai_server import ScriptedModel

COMMUNICATE_SECONDS = 120.0
_MAX_REQUEST = 1 << 20


# ----- the server (runs in its own interpreter) ---------------------------------------------------------------


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_REQUEST, 3)
    while not data.endswith(b"\n"):  # a stream socket may split the request; the fds come with its start
        more = conn.recv(_MAX_REQUEST)
        if not more:
            raise EOFError("the request ended early")
        data += more
    return json.loads(data), fds


def _become_child(request: dict, fds: list[int], conn: socket.socket, listener: socket.socket) -> list[str]:
    """In the forked child: take the pipes as stdin/stdout/stderr and the request's environment and folder."""
    listener.close()
    conn.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["membot", *request["args"]]
    return list(request["args"])


def _reap(request: dict, fds: list[int], conn: socket.socket, listener: socket.socket) -> list[str] | None:
    """In the per-request reaper: fork the child, then report its pid and exit code. Returns only in the child."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server ignores it; the reaper and the child must not
    pid = os.fork()
    if pid == 0:
        return _become_child(request, fds, conn, listener)
    for fd in fds:
        os.close(fd)  # else the test never sees end-of-file once the child exits
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def serve(path: str) -> list[str]:
    """Accept requests until stdin closes; returns (only in a forked child) the arguments to run membot with."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reapers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is not listener:  # stdin readable: only ever its end
                    sys.exit(0)
                conn, _ = listener.accept()
                request, fds = _read_request(conn)
                if os.fork() == 0:
                    selector.close()
                    args = _reap(request, fds, conn, listener)
                    if args is not None:
                        return args
                for fd in fds:
                    os.close(fd)
                conn.close()


# ----- the test side -------------------------------------------------------------------------------------------


class ForkedMembot:
    """One forked `membot`, with the parts of asyncio.subprocess.Process that tests use."""

    def __init__(self, pid: int, status: asyncio.StreamReader, control: asyncio.StreamWriter,
                 stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        self.pid = pid
        self._status = status
        self._control = control
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self.returncode is None:
            line = await self._status.readline()
            if not line:
                raise RuntimeError(f"the fork server lost membot (pid {self.pid}) before it exited")
            self.returncode = int(line)
            self._control.close()
        return self.returncode

    async def communicate(self, input: bytes = b"") -> tuple[bytes, bytes]:
        if input:
            self.stdin.write(input)
            await self.stdin.drain()
        self.stdin.close()
        out, err, _ = await asyncio.gather(self.stdout.read(), self.stderr.read(), self.wait())
        return out, err


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader


async def _writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(fd, "wb", buffering=0)
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)


class MembotForks:
    """The test session's fork server, and `start`/`membot` as tests/cli_helpers.py has them."""

    def __init__(self, path: Path, server: subprocess.Popen[bytes]) -> None:
        self.path = path
        self._server = server

    @classmethod
    def launch(cls, folder: Path) -> MembotForks:
        path = folder / "forks.sock"
        log = (folder / "forks.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, __file__, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            cwd=str(folder),
        )
        log.close()
        assert server.stdout is not None
        if server.stdout.readline() != b"ready\n":  # end-of-file if it failed
            server.kill()
            server.wait()
            raise RuntimeError(f"the membot fork server did not start: {(folder / 'forks.log').read_text()[-2000:]}")
        return cls(path, server)

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()  # its signal to stop
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()

    async def start(self, model: ScriptedModel, home: Path, *args: str,
                    env: dict[str, str] | None = None) -> ForkedMembot:
        from tests.cli_helpers import child_env

        request = {"args": list(args), "env": child_env(model, home, env), "cwd": str(home.parent)}
        await asyncio.to_thread(home.parent.mkdir, parents=True, exist_ok=True)  # the child's cwd: it must exist
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, str(self.path))
            sock.setblocking(True)  # one short send, with the child's ends of the pipes
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [in_r, out_w, err_w])
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        status, control = await asyncio.open_unix_connection(sock=sock)
        line = await status.readline()
        if not line:
            raise RuntimeError(f"the membot fork server did not start {args}: see its log beside {self.path}")
        return ForkedMembot(int(line), status, control, await _writer(in_w), await _reader(out_r),
                            await _reader(err_r))

    async def membot(self, model: ScriptedModel, home: Path, *args: str, stdin: str = "",
                     env: dict[str, str] | None = None) -> tuple[int, str, str]:
        proc = await self.start(model, home, *args, env=env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=COMMUNICATE_SECONDS)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture(scope="session")
def membot_forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MembotForks]:
    """The session's fork server (one per xdist worker), started on first use."""
    # A short folder: a Unix socket's path is limited to about a hundred bytes.
    forks = MembotForks.launch(Path(tmp_path_factory.mktemp("forks", numbered=True)))
    try:
        yield forks
    finally:
        forks.close()


if __name__ == "__main__":
    sys.path.pop(0)  # this script's folder (tests/); membot runs as from its own folder, not from here
    import membot.adapters.discord.runner  # noqa: F401 (imported by `serve` and `discord sync`, preloaded)
    import membot.adapters.slack.runner  # noqa: F401 (imported by `serve`)
    import membot.adapters.terminal  # noqa: F401 (imported by `chat`)
    from membot.bot.cli import main

    arguments = serve(sys.argv[1])
    sys.path.insert(0, os.getcwd())  # as `python -m membot` run in the child's folder has it
    sys.exit(main(arguments))
