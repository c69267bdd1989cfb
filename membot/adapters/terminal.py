"""The terminal adapter: `membot chat`. stdout carries only what the agent sends with send_message;
the monologue and function activity go to stderr (dimmed on a terminal).

On a terminal, lines are read with prompt_toolkit (editing, history kept in MEMBOT_HOME); otherwise stdin is
read line by line, so a script can drive it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from membot.agent.events import AssistantMessage, DraftDropped, Event, FunctionResult, ReplyDraft
from membot.bot.errors import QuotaReached
from membot.bot.identity import UserRef
from membot.bot.monologue import monologue_line
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService, CommandError
from membot.bot.views import forget_warning, memory_text

HELP = """In-chat commands:
  /memory          what the agent holds: core memory, counts, attached sources
  /persona NAME    switch the agent to another persona
  /attach SOURCE   give the agent a data source (`membot sources` lists them)
  /detach SOURCE   take a data source away
  /cancel          stop the agent's current reply (while it replies here, press Ctrl-C)
  /reminders       the reminders your agent set; /reminders cancel N drops reminder N
  /heartbeats      whether timed heartbeats run, the next one due; /heartbeats on|off switches them
  /memory export   write everything the agent holds to a file here (`membot memory import` restores it)
  /forget          delete the agent and everything it holds (asks first)
  /help            this list
  /exit            leave (also Ctrl-D, or Ctrl-C at the prompt; Ctrl-C during a reply stops it)"""
PROMPT = "> "


class Thinking:
    """A "thinking…" line while the model works, on a terminal only; wiped before anything else is printed."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    DELAY = 0.2  # an answer quicker than this shows no indicator at all

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._task: asyncio.Task[None] | None = None
        self._shown = False

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._spin())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()  # it is suspended in sleep: it writes nothing more
            self._task = None
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    async def _spin(self) -> None:
        await asyncio.sleep(self.DELAY)
        for frame in itertools.cycle(self.FRAMES):
            self.stream.write(f"\r\033[2m{frame} thinking…\033[0m")
            self.stream.flush()
            self._shown = True
            await asyncio.sleep(0.1)


class LineReader:
    """Lines typed at a terminal, with editing and history; None at Ctrl-D or Ctrl-C (leave)."""

    def __init__(self, inp: TextIO, err: TextIO, history: Path | None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        from prompt_toolkit.input import create_input
        from prompt_toolkit.output import create_output

        kept: History = InMemoryHistory()
        if history is not None:
            with contextlib.suppress(OSError):  # a read-only home: history for this session only
                history.parent.mkdir(parents=True, exist_ok=True)
                history.touch(mode=0o600)
                kept = FileHistory(str(history))
        # The prompt and the line being edited go to stderr, as the monologue: stdout is the agent's replies.
        self.session: PromptSession[str] = PromptSession(
            history=kept, input=create_input(inp), output=create_output(stdout=err)
        )

    async def read(self) -> str | None:
        try:
            # Ctrl-C arrives as a key here (the terminal is in raw mode), not as a signal: no handler needed.
            return await self.session.prompt_async(PROMPT, handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            return None


class Terminal:
    def __init__(
        self, service: BotService, user: UserRef, out: TextIO, err: TextIO, inp: TextIO, history: Path | None = None
    ) -> None:
        self.service = service
        self.user = user
        self.out, self.err, self.inp = out, err, inp
        self._dim = err.isatty()
        self._thinking = Thinking(out)
        #: The reply being printed as it is written: its draft key and what is printed of it.
        self._drafting: tuple[str, str] | None = None
        self._held: list[Event] = []
        self._reader = LineReader(inp, err, history) if inp.isatty() and err.isatty() else None

    def _log(self, text: str) -> None:
        self.err.write(f"\033[2m{text}\033[0m\n" if self._dim else text + "\n")
        self.err.flush()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _print(self, event: Event) -> None:
        if isinstance(event, ReplyDraft | DraftDropped | AssistantMessage) and self._draft(event):
            self._release()
            return
        if self._drafting is not None and not event.visible:
            self._held.append(event)  # the monologue waits for the line being written to end
            return
        if event.visible and self._drafting is not None:
            self._end_draft()  # an error, or another reply, while one was being written: it was cut off
        if event.visible:
            self._say(getattr(event, "text", ""))
        elif isinstance(event, FunctionResult) and event.ok and event.result.strip() in ("", "None"):
            return  # a function that did its job and has nothing to say (send_message, a memory edit)
        elif (line := monologue_line(event)) is not None:
            self._log(line)

    def _draft(self, event: ReplyDraft | DraftDropped | AssistantMessage) -> bool:
        """A reply printed as it is written: each draft adds what is new, its final text ends the line; a
        dropped one is said to be. Whether the event was handled here."""
        key, printed = self._drafting or ("", "")
        if isinstance(event, ReplyDraft):
            if event.draft != key:
                self._end_draft()
                key, printed = event.draft, ""
            if event.text.startswith(printed):
                self.out.write(event.text[len(printed):])
                self.out.flush()
                self._drafting = (key, event.text)
            return True
        if event.draft is None or event.draft != key:
            return False
        self._drafting = None
        if isinstance(event, DraftDropped):
            self.out.write("\n")
            self._log("(that reply was withdrawn: the model's call was malformed)")
        elif event.text.startswith(printed):
            self._say(event.text[len(printed):])
        else:
            self._say("\n" + event.text)
        return True

    def _end_draft(self) -> None:
        """A reply being written whose final text never came (the model broke off, the step failed): its line
        ends, marked as cut off."""
        if self._drafting is not None:
            self._drafting = None
            self._say("")
            self._log("(that reply was cut off before it was finished; it was not kept)")
        self._release()

    def _release(self) -> None:
        if self._drafting is None:
            held, self._held = self._held, []
            for event in held:
                self._print(event)

    async def show(self, events: AsyncIterator[Event]) -> None:
        self._thinking.start()
        try:
            async for event in events:
                self._thinking.stop()
                self._print(event)
                if self._drafting is None:  # never over a line being written
                    self._thinking.start()
        finally:
            self._thinking.stop()
            self._end_draft()

    async def _readline(self) -> str | None:
        if self._reader is not None:
            return await self._reader.read()
        line = await asyncio.to_thread(self.inp.readline)
        return None if line == "" else line.rstrip("\r\n")

    async def command(self, line: str) -> bool:
        """Run an in-chat command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        try:
            if name == "help":
                self._log(HELP)
            elif name == "memory" and arg.split()[:1] == ["export"]:
                await self._export()
            elif name == "forget":
                return await self._forget()
            elif name == "memory":
                self._log(memory_text(await self.service.memory(self.user)))
            elif name == "persona":
                self._log(await self.service.set_persona(self.user, arg))
            elif name == "attach":
                note, events = await self.service.attach(self.user, arg)
                self._log(note)
                await self.show(events)
            elif name == "detach":
                self._log(await self.service.detach(self.user, arg))
            elif name == "reminders":
                await self._reminders(arg)
            elif name == "heartbeats":
                await self._heartbeats(arg)
            elif name == "cancel":
                # At the prompt nothing of ours is running; the service still says so, as on the platforms.
                self._log(await self.service.cancel(self.user))
            else:
                self._log(f"Unknown command /{name[:40]}; /help lists the commands.")
        except CommandError as exc:
            self._log(str(exc))
        return True

    async def _reminders(self, arg: str) -> None:
        self._log(await self.service.reminders_command(self.user, arg))

    async def _heartbeats(self, arg: str) -> None:
        self._log(await self.service.heartbeats_command(self.user, arg))

    async def _export(self) -> None:
        """The export, as a file in the folder the chat was started from (private: the process's umask)."""
        name, raw = await self.service.export_memory(self.user)
        path = Path.cwd() / name
        try:
            await asyncio.to_thread(path.write_bytes, raw)
        except OSError as exc:
            raise CommandError(f"Could not write {path}: {exc.strerror or exc}; start the chat in a folder you "
                               "may write to, or use `membot memory export`.") from None
        self._log(f"Wrote everything your agent holds to {path}. `membot memory import` restores it.")

    async def _forget(self) -> bool:
        """Delete the agent after a typed confirmation; the chat ends with it (False), as its agent is gone."""
        self._log(forget_warning("your agent", "/memory export", "Type yes to delete it:"))
        answer = await self._readline()
        if (answer or "").strip().lower() != "yes":
            self._log("Nothing was deleted.")
            return True
        self._log(await self.service.forget(self.user))
        self._log("The chat ends here; `membot chat` starts a new agent.")
        return False

    async def deliver(self, agent_id: int, events: AsyncIterator[Event]) -> None:
        """A wake-up's step (a reminder, a timed heartbeat), fired by the scheduler while the chat is open: what
        the agent sends is printed as any reply, above the line being typed."""
        if self._reader is None:
            await self.show(events)
            return
        from prompt_toolkit.application import in_terminal

        async with in_terminal():
            await self.show(events)

    async def chat(self, line: str) -> None:
        try:
            await self.show(self.service.chat(self.user, line))
        except QuotaReached as exc:  # raised before the agent saw the message: say why, keep chatting
            self._log(str(exc))

    async def run(self, persona: str | None, human: str | None) -> None:
        try:
            agent_id, created = await self.service.agent_id(self.user, persona, human)
            if persona and not created:
                self._log(await self.service.set_persona(self.user, persona))
        except CommandError as exc:
            self._log(str(exc))
            raise SystemExit(2) from None
        # This user's wake-ups fire while the chat is open, and those that fell due while it was closed at once.
        scheduler = Scheduler(self.service, self.deliver, agents={agent_id})
        try:
            await self.show(self.service.login(self.user))
            scheduler.start()
            while (line := await self._readline()) is not None:
                if not line.strip():
                    continue
                if line.startswith("/"):
                    if not await self.command(line):
                        break
                    continue
                await self.chat(line)
        except asyncio.CancelledError:
            # Ctrl-C during a reply: the reply stops and so does the chat; the terminal echoed "^C" on the
            # line, wiped here so the shell's prompt starts on a clean one.
            if self.err.isatty():
                self.err.write("\r\033[K")
                self.err.flush()
            raise
        finally:
            await scheduler.stop()


async def run_chat(service: BotService, user_name: str, persona: str | None, human: str | None) -> None:
    user = UserRef("terminal", "local", user_name, user_name)
    history = service.settings.home_dir / "chat_history"
    await Terminal(service, user, sys.stdout, sys.stderr, sys.stdin, history).run(persona, human)
