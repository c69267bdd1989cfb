"""The terminal adapter: `membot chat`. stdout carries only what the agent sends with send_message;
the monologue and function activity go to stderr (dimmed on a terminal). Reads stdin line by line, so a
script can drive it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import TextIO

from membot.agent.events import Event
from membot.bot.identity import UserRef
from membot.bot.monologue import monologue_line
from membot.bot.service import BotService, CommandError
from membot.bot.views import memory_text

HELP = "Commands: /memory, /persona NAME, /attach SOURCE, /detach SOURCE, /exit"


class Terminal:
    def __init__(self, service: BotService, user: UserRef, out: TextIO, err: TextIO, inp: TextIO) -> None:
        self.service = service
        self.user = user
        self.out, self.err, self.inp = out, err, inp
        self._dim = err.isatty()

    def _log(self, text: str) -> None:
        self.err.write(f"\033[2m{text}\033[0m\n" if self._dim else text + "\n")
        self.err.flush()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def show(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if event.visible:
                self._say(getattr(event, "text", ""))
            elif (line := monologue_line(event)) is not None:
                self._log(line)

    async def _readline(self) -> str | None:
        if self.inp.isatty():
            self.err.write("> ")
            self.err.flush()
        line = await asyncio.to_thread(self.inp.readline)
        return None if line == "" else line.rstrip("\r\n")

    async def command(self, line: str) -> bool:
        """Run an in-chat command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        try:
            if name == "memory":
                self._log(memory_text(await self.service.memory(self.user)))
            elif name == "persona":
                self._log(await self.service.set_persona(self.user, arg))
            elif name == "attach":
                note, events = await self.service.attach(self.user, arg)
                self._log(note)
                await self.show(events)
            elif name == "detach":
                self._log(await self.service.detach(self.user, arg))
            else:
                self._log(f"Unknown command /{name[:40]}. {HELP}")
        except CommandError as exc:
            self._log(str(exc))
        return True

    async def run(self, persona: str | None, human: str | None) -> None:
        try:
            _, created = await self.service.agent_id(self.user, persona, human)
            if persona and not created:
                self._log(await self.service.set_persona(self.user, persona))
        except CommandError as exc:
            self._log(str(exc))
            raise SystemExit(2) from None
        await self.show(self.service.login(self.user))
        while (line := await self._readline()) is not None:
            if not line.strip():
                continue
            if line.startswith("/"):
                if not await self.command(line):
                    break
                continue
            await self.show(self.service.chat(self.user, line))


async def run_chat(service: BotService, user_name: str, persona: str | None, human: str | None) -> None:
    user = UserRef("terminal", "local", user_name, user_name)
    await Terminal(service, user, sys.stdout, sys.stderr, sys.stdin).run(persona, human)
