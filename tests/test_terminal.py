"""`membot chat` at a real terminal (a pseudo-terminal): line editing, /help, the thinking indicator, quiet
function results, and Ctrl-C at the prompt leaving at once on a clean line."""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

from membot.adapters.terminal import Terminal
from membot.agent.events import (
    AssistantMessage,
    DraftDropped,
    FunctionCall,
    FunctionResult,
    ReplyDraft,
    Thought,
)
from membot.agent.store import wakeups
from membot.bot.errors import QuotaReached
from membot.bot.identity import UserRef
from tests.cli_helpers import child_env
from tests.fakes.openai_server import send
from tests.pty_helpers import CTRL_C, ENTER, LEFT, PtyMembot

PROMPT = r"(?m)^>"  # prompt_toolkit draws "> " as ">", a backspace and a cursor move


def _echo(body: dict) -> object:
    """Login -> "ready"; a user message -> "echo: <it>"."""
    said = json.loads(body["messages"][-1]["content"])
    return send(f"echo: {said['message']}" if said.get("type") == "user_message" else "ready")


async def test_arrow_keys_edit_the_line_help_answers_and_ctrl_c_leaves_at_once(model, home):
    model.default = _echo
    chat = PtyMembot("chat", "--user", "tty", env=child_env(model, home), cwd=home.parent)
    try:
        await chat.expect(r"ready")
        await chat.expect(PROMPT)
        chat.type("abc" + LEFT + "X" + ENTER)
        await chat.expect(r"echo: abXc")
        said = [json.loads(m["content"]) for m in model.requests[-1]["messages"] if m["role"] == "user"]
        assert said[-1]["message"] == "abXc"  # the model got the edited line, no escape codes
        assert "send_message: None" not in chat.text  # a result with nothing to say is not shown

        await chat.expect(PROMPT)
        chat.type("/help" + ENTER)
        await chat.expect(r"In-chat commands")
        assert "/memory" in chat.text and "/exit" in chat.text

        await chat.expect(PROMPT)
        chat.type("half a thought")
        await chat.expect(r"half a thought")
        started = time.monotonic()
        chat.type(CTRL_C)
        await chat.expect(r"\n")  # the prompt is left at once, on a clean line...
        assert time.monotonic() - started < 1.0
        assert await chat.wait(within=10) == 0  # ...and the process ends after closing its stores (~0.5 s)
        assert chat.text.rstrip(" ").endswith("\n")  # the shell's prompt starts on a line of its own
        assert len(model.requests) == 2  # the half-typed line was never sent
    finally:
        chat.close()


async def test_history_is_kept_between_runs(model, home):
    model.default = _echo
    env = child_env(model, home)
    first = PtyMembot("chat", env=env, cwd=home.parent)
    try:
        await first.expect(PROMPT)
        first.type("remember this line" + ENTER)
        await first.expect(r"echo: remember this line")
        await first.expect(PROMPT)
        first.type("/exit" + ENTER)
        assert await first.wait() == 0
    finally:
        first.close()
    second = PtyMembot("chat", env=env, cwd=home.parent)
    try:
        await second.expect(PROMPT)
        second.type("\x1b[A\x1b[A" + ENTER)  # Up twice: past /exit to the message before it
        await second.expect(r"echo: remember this line")
        # Typed while the agent replies, Ctrl-D is the line discipline's end of file (cooked mode) and is gone
        # before the prompt reads: wait for the prompt, as a person would.
        await second.expect(PROMPT)
        second.type("\x04")  # Ctrl-D leaves too
        assert await second.wait() == 0
    finally:
        second.close()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _events(*events):
    for event in events:
        yield event


async def test_quiet_results_are_hidden_and_nothing_but_replies_reach_a_piped_stdout():
    out, err = io.StringIO(), io.StringIO()
    terminal = Terminal(None, None, out, err, io.StringIO())  # type: ignore[arg-type]
    await terminal.show(_events(
        FunctionCall(1, "send_message", '{"message": "hi"}'),
        AssistantMessage(1, "hi"),
        FunctionResult(1, "send_message", True, "None"),
        FunctionResult(1, "archival_memory_search", True, "Found 1 passage"),
        FunctionResult(1, "core_memory_replace", False, "Error: no such text"),
    ))
    assert out.getvalue() == "hi\n"  # no indicator when stdout is not a terminal
    assert err.getvalue().splitlines() == [
        '⚡ send_message({"message": "hi"})', "✓ archival_memory_search: Found 1 passage",
        "✗ core_memory_replace: Error: no such text",
    ]


async def test_the_thinking_indicator_is_wiped_before_the_reply():
    out = _Tty()

    async def slow():
        import asyncio

        await asyncio.sleep(0.5)
        yield AssistantMessage(1, "done")

    terminal = Terminal(None, None, out, io.StringIO(), io.StringIO())  # type: ignore[arg-type]
    await terminal.show(slow())
    shown = out.getvalue()
    assert "thinking…" in shown
    assert shown.endswith("\r\033[Kdone\n")


async def test_a_streamed_reply_prints_as_it_is_written_and_the_monologue_waits_for_its_line():
    out, err = io.StringIO(), io.StringIO()
    terminal = Terminal(None, None, out, err, io.StringIO())  # type: ignore[arg-type]
    await terminal.show(_events(
        ReplyDraft(1, "1.0", "Hel"), ReplyDraft(1, "1.0", "Hello, wor"),
        Thought(1, "greeting"),  # arrives mid-line: held until the line ends
        AssistantMessage(1, "Hello, world!", draft="1.0"),
        ReplyDraft(1, "2.0", "Broken repl"), DraftDropped(1, "2.0"),
        AssistantMessage(1, "Fine."),
    ))
    assert out.getvalue() == "Hello, world!\nBroken repl\nFine.\n"
    assert err.getvalue().splitlines() == ["💭 greeting", "(that reply was withdrawn: the model's call was malformed)"]


class _NoWakeups:
    """A database with no wake-ups due, for the terminal's scheduler."""

    async def read(self, work):
        return [] if getattr(work, "func", None) is wakeups.due else None


class _Service:
    """Just what the terminal asks of the bot service, for /cancel and a reached quota."""

    def __init__(self) -> None:
        self.cancelled: list[UserRef] = []
        self.engine = SimpleNamespace(wakeups=wakeups.Signal(), db=_NoWakeups(), leases=SimpleNamespace(holder="t"))

    async def agent_id(self, user, persona=None, human=None):
        return 1, False

    async def login(self, user):
        return
        yield

    async def cancel(self, user):
        self.cancelled.append(user)
        return "Nothing is running for you right now."

    async def chat(self, user, text):
        raise QuotaReached("You have used today's 1,000 tokens; more at 00:00 UTC.")
        yield


async def test_cancel_asks_the_service_and_a_reached_quota_is_said_and_the_chat_goes_on():
    service, user = _Service(), UserRef("terminal", "local", "me", "me")
    out, err = io.StringIO(), io.StringIO()
    terminal = Terminal(service, user, out, err, io.StringIO("/cancel\nhello\n/help\n"))  # type: ignore[arg-type]
    await terminal.run(None, None)
    lines = err.getvalue().splitlines()
    assert lines[0] == "Nothing is running for you right now." and service.cancelled == [user]
    assert lines[1] == "You have used today's 1,000 tokens; more at 00:00 UTC."
    assert lines[2] == "In-chat commands:" and any(line.lstrip().startswith("/cancel") for line in lines)
    assert out.getvalue() == ""  # stdout is the agent's replies only
