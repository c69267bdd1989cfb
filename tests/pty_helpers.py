"""A `membot` child process on a pseudo-terminal, typed into as a person would, read back as the screen gets it.

The pty is the child's controlling terminal (pty.fork), so getpass and Ctrl-C behave as at a real one. Waiting
is async: the scripted model server the child talks to runs on the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import struct
import sys
import termios
import time
from pathlib import Path

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
LEFT = "\x1b[D"
CTRL_C = "\x03"
ENTER = "\r"


class PtyMembot:
    def __init__(self, *args: str, env: dict[str, str], cwd: Path) -> None:
        # A terminal prompt_toolkit knows, and no cursor-position request left waiting for an answer.
        env = env | {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONUNBUFFERED": "1"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become membot at once, and never run on as a copy of pytest
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, "-m", "membot", *args], env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        os.set_blocking(self.fd, False)
        self.raw = b""
        self._seen = 0  # how much of the text `expect` has matched past
        self.returncode: int | None = None

    @property
    def text(self) -> str:
        """Everything the child wrote, without terminal escape sequences."""
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # OSError: the child closed the terminal
            while chunk := os.read(self.fd, 65536):
                self.raw += chunk

    async def expect(self, pattern: str, within: float = 30) -> re.Match[str]:
        """Wait until the output past the last match holds `pattern` (a regex)."""
        deadline = time.monotonic() + within
        while True:
            self._drain()
            if found := re.compile(pattern).search(self.text, self._seen):
                self._seen = found.end()
                return found
            if time.monotonic() > deadline or self.poll() is not None and not self._readable():
                raise AssertionError(f"{pattern!r} never came; the terminal shows:\n{self.text[-3000:]}")
            await asyncio.sleep(0.02)

    def _readable(self) -> bool:
        before = len(self.raw)
        self._drain()
        return len(self.raw) > before

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    async def answer(self, prompt: str, reply: str) -> None:
        await self.expect(prompt)
        self.type(reply + ENTER)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    async def wait(self, within: float = 30) -> int:
        deadline = time.monotonic() + within
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"membot did not exit; the terminal shows:\n{self.text[-3000:]}")
            self._drain()
            await asyncio.sleep(0.02)
        self._drain()
        return self.returncode  # type: ignore[return-value]

    def close(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)
