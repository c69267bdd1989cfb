"""Benchmarks for membot: figures, not pass/fail.

Every benchmark drives the product the way a user would (through `BotService`, against the scripted
OpenAI-compatible server of the test suite) and measures a baseline in the same run, because these machines
are shared and absolute times drift from one minute to the next; only ratios to a same-run baseline compare.

This module holds what the benchmark files share: the `Row` they return, targets, percentiles, and the ways
to start the service and the scripted model.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from membot.bot.identity import UserRef
from membot.bot.serve import freeze_start_up
from membot.bot.service import BotService
from tests.conftest import make_settings
from tests.fakes.openai_server import ChatReply, ScriptedModel, send, text, tool_call

#: The repository root: `python -m bench` must be run from here (it imports `tests.*`), and subprocesses too.
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Target:
    """A goal from the issue: `value <= limit` (or >=), on the figure itself or on its ratio to the baseline."""

    op: Literal["<=", ">="]
    limit: float
    on: Literal["value", "ratio"] = "value"
    #: How the limit reads in the table ("2 ms", "1.5×"); the number alone when empty.
    label: str = ""

    def met(self, value: float, ratio: float | None) -> bool | None:
        subject = value if self.on == "value" else ratio
        if subject is None:
            return None
        return subject <= self.limit if self.op == "<=" else subject >= self.limit

    def __str__(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.label or f'{self.limit:g}'}"


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    benchmark: str
    figure: str  # what was measured, e.g. "own time per model call, p50"
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""  # what the baseline is, e.g. "bare round trip, same payload"
    target: Target | None = None
    note: str = ""  # sizes, caveats: anything a reader needs to trust the number

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return self.target.met(self.value, self.ratio) if self.target else None


def fmt(value: float, unit: str) -> str:
    """A number with a sensible number of digits for its size."""
    if unit == "%":
        return f"{value:.1f}%"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f} {unit}".strip()
    if abs(value) >= 10:
        return f"{value:.1f} {unit}".strip()
    if abs(value) >= 1:
        return f"{value:.2f} {unit}".strip()
    return f"{value:.2g} {unit}".strip()  # small figures keep two significant digits, not "0.00"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without needing numpy."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float) -> float:
    return seconds * 1000


#: The smallest chat request: one line, no tools.
HELLO: dict[str, Any] = {"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}]}


class BareHttp:
    """Bare HTTP POSTs of JSON (aiohttp, as membot's endpoint uses, without its retries or anything else of
    membot), for baselines."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

    async def post(self, body: dict[str, Any], path: str = "/chat/completions") -> Any:
        async with self._session.post(self.base_url + path, data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"}) as response:
            raw = await response.read()
        # A streamed call (the product streams its chat calls) answers server-sent events: read to the end.
        return raw.decode() if body.get("stream") else json.loads(raw)

    async def hello(self) -> Any:
        return await self.post(HELLO)

    async def close(self) -> None:
        await self._session.close()


def user(name: str) -> UserRef:
    """A terminal user, as `membot chat --user NAME` names them."""
    return UserRef("terminal", "local", name, name)


async def drain(events: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in events]


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the table."""
    import sys

    print(f"  {message}", file=sys.stderr, flush=True)


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t: ...` then `t[0]` is the elapsed seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


# ----- scripted model replies ------------------------------------------------------------------------------


def _last_event_type(body: dict[str, Any]) -> str | None:
    """The `type` of the newest event the agent sent (events reach the model as JSON in user turns)."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "user":
        return None
    try:
        packed = json.loads(messages[-1].get("content") or "")
    except (TypeError, ValueError):
        return None
    return packed.get("type") if isinstance(packed, dict) else None


def ok_responder(body: dict[str, Any]) -> ChatReply:
    """The cheapest well-behaved model: answers every event with send_message("ok"), and writes a summary
    when asked for one (a summary request carries no tools)."""
    if not body.get("tools"):
        return text("The user and I exchanged short messages.")
    return send("ok")


def chain_responder(body: dict[str, Any]) -> ChatReply:
    """A chain of two calls per user message: save a fact with a heartbeat, then reply. Stateless (decided by
    the newest event), so it serves any number of users at once, unlike a FIFO script."""
    if not body.get("tools"):
        return text("The user and I exchanged short messages.")
    if _last_event_type(body) == "heartbeat":
        return send("ok")
    return tool_call(
        "core_memory_append",
        {"name": "human", "content": "Likes tea.", "request_heartbeat": True},
        "Worth remembering.",
    )


#: What the `chain_long` responder finally sends: three sentences, which a streaming adapter shows as they come.
LONG_REPLY = (
    "Noted: you like tea, and I will remember it next time we talk. Green or black, I would like to know which "
    "you prefer, and when you drink it. Tell me more whenever you want; I am keeping track of it all for you."
)


def chain_long_responder(body: dict[str, Any]) -> ChatReply:
    """`chain`, with a reply of a few sentences (LONG_REPLY) for the streaming measurements."""
    reply = chain_responder(body)
    if body.get("tools") and _last_event_type(body) == "heartbeat":
        return send(LONG_REPLY)
    return reply


RESPONDERS = {"ok": ok_responder, "chain": chain_responder, "chain_long": chain_long_responder}


# ----- the service and the model -----------------------------------------------------------------------------


@asynccontextmanager
async def scripted_model(
    responder: str = "ok", latency: float = 0.0, embedding_latency: float = 0.0, port: int = 0,
    reuse_port: bool = False, record: bool = True, stream_delay: float = 0.0,
) -> AsyncIterator[ScriptedModel]:
    """The scripted server in this process and on this event loop (its requests can be inspected unless
    `record` is off); `port`, `reuse_port`, `record` and `stream_delay` as ScriptedModel takes them."""
    async with ScriptedModel(latency=latency, embedding_latency=embedding_latency, default=RESPONDERS[responder],
                             port=port, reuse_port=reuse_port, record=record, stream_delay=stream_delay) as model:
        yield model


@asynccontextmanager
async def open_service(model_url: str | ScriptedModel, **env: Any) -> AsyncIterator[BotService]:
    """The real service over fresh SQLite and Milvus Lite files in a temporary MEMBOT_HOME."""
    with tempfile.TemporaryDirectory(prefix="membot-bench-") as tmp:
        settings = make_settings(Path(tmp) / "home", _UrlOnly.of(model_url), **env)
        service = await BotService.open(settings)
        freeze_start_up()  # as `membot serve` does
        try:
            yield service
        finally:
            await service.close()


class _UrlOnly:
    """`make_settings` reads only `base_url` of the model; a server in another process has just that."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @classmethod
    def of(cls, model: str | ScriptedModel) -> Any:
        return cls(model) if isinstance(model, str) else model


def _serve_model(
    conn: Connection, responder: str, latency: float, embedding_latency: float, port: int, stream_delay: float = 0.0
) -> None:
    """Body of a model-server process: serve until the parent closes its end of the pipe."""

    async def main() -> None:
        # Every process sets reuse_port, the first too: the kernel shares a port only among sockets that all ask.
        # Nobody reads its requests, and keeping them all makes its collector pause (see ScriptedModel).
        async with scripted_model(responder, latency, embedding_latency, port, reuse_port=True, record=False,
                                  stream_delay=stream_delay) as model:
            conn.send(model.base_url)
            # Blocking on the pipe in a thread keeps the server's event loop free to answer requests.
            await asyncio.to_thread(_wait_closed, conn)

    asyncio.run(main())


def _wait_closed(conn: Connection) -> None:
    try:
        conn.recv()
    except EOFError:
        pass


@asynccontextmanager
async def model_process(
    responder: str = "ok", latency: float = 0.0, processes: int = 1, stream_delay: float = 0.0
) -> AsyncIterator[str]:
    """The scripted server in processes of its own, sharing one port; yields its base URL.

    Where many requests run at once, a server in our own process would spend our CPU and event loop
    parsing requests and building replies, and we would measure the fake as much as membot. A real model
    endpoint costs the client nothing but the wait; with several processes, neither does the fake's own
    queue of requests.
    """
    ctx = multiprocessing.get_context("spawn")
    started: list[tuple[Connection, multiprocessing.process.BaseProcess]] = []
    url = ""
    try:
        for _ in range(processes):
            parent, child = ctx.Pipe()
            port = urlsplit(url).port or 0  # the first process picks a free port; the others share it
            proc = ctx.Process(target=_serve_model, args=(child, responder, latency, 0.0, port, stream_delay),
                               daemon=True)
            proc.start()
            child.close()
            started.append((parent, proc))
            if not await asyncio.to_thread(parent.poll, 60):
                raise RuntimeError("the scripted model process did not start")
            url = parent.recv()
        yield url
    finally:
        for parent, _ in started:
            parent.close()  # the child sees EOF and shuts its server down
        for _, proc in started:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
