"""Concurrency: many users talking at once to a slow model.

N users each send 5 messages, one after the other (each waits for its reply, as a person does), all users at
once. Every message runs a chain of two model calls and the model takes 300 ms per call, so one chain's model
time is 600 ms. If membot added nothing and never queued, all N users would each finish a message every 600 ms:
that is the ideal throughput (N ÷ chain time). The scripted model runs in two processes of its own, sharing a
port, so that neither its CPU nor its own queue of requests is ours (a real endpoint costs the client only the
wait; with one process, bare HTTP with membot's request bodies reached only 0.82× of the ideal, with two 0.95×).

Agents are created before the clock starts (creating identities is not the point here); loading them into
the service's cache happens on the first message and is counted. A message's time ends with its step's last
event, the reply, as a user sees it; the step's last commit lands behind it and is awaited before anything
reads that agent's memory again (the next step's first function, a command).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from bench import (
    HELLO,
    BareHttp,
    Row,
    Target,
    drain,
    log,
    model_process,
    ms,
    open_service,
    percentile,
    scripted_model,
    stopwatch,
    user,
)
from membot.bot.service import BotService

NAME = "concurrency"
MESSAGES = 5
CALLS_PER_CHAIN = 2


async def run(quick: bool) -> list[Row]:
    # The full size is the issue's; the small one shows where the target still holds on this machine.
    sizes, latency = ((10, 3), 0.1) if quick else ((200, 20), 0.3)
    rows: list[Row] = []
    bodies = await _membot_bodies()
    async with model_process("chain", latency, processes=2) as url:
        async with open_service(url) as service:
            # Same run, same service: one user alone gives the floor a message can reach here.
            alone = await _conversation(service, "alone", MESSAGES)
            for users in sizes:
                names = [f"user-{users}-{i}" for i in range(users)]
                for name in names:
                    await service.agent_id(user(name))
                rows += await _burst(service, names, latency, alone, full=users == sizes[0])
                if users == sizes[0]:
                    # The same users again: their agents are loaded now. Shows what the first message's
                    # loading cost the burst above.
                    again = await _burst(service, names, latency, alone, full=False, tag="agents already loaded")
                    rows += [replace(row, target=None) for row in again]
        rows.append(await _bare_http(url, sizes[0], latency, [HELLO],
                                     "one-line requests"))
        rows.append(await _bare_http(url, sizes[0], latency, bodies, "membot's own request bodies"))
    return rows


async def _burst(
    service: BotService, names: list[str], latency: float, alone: list[float], full: bool, tag: str = ""
) -> list[Row]:
    chain = CALLS_PER_CHAIN * latency
    users = len(names)
    log(f"{users} users × {MESSAGES} messages, {ms(latency):.0f} ms per model call {tag}")
    with stopwatch() as wall:
        per_user = await asyncio.gather(*(_conversation(service, name, MESSAGES) for name in names))
    latencies = [t for samples in per_user for t in samples]
    first = [samples[0] for samples in per_user]
    later = [t for samples in per_user for t in samples[1:]]
    throughput = len(latencies) / wall[0]
    log(f"wall {wall[0]:.2f} s (ideal {MESSAGES * chain:.2f} s)")
    tag = f"{users} users" + (f", {tag}" if tag else "")
    note = f"{users} users × {MESSAGES} messages, 2 calls × {ms(latency):.0f} ms each"
    rows = [
        Row(NAME, f"throughput, {tag}", throughput, "msg/s", users / chain, "ideal: users ÷ chain time",
            Target(">=", 0.9, on="ratio", label="90% of ideal"), note=note),
        Row(NAME, f"latency per message, p50, {tag}", ms(percentile(latencies, 50)), "ms",
            ms(percentile(alone, 50)), "one user alone, p50"),
        Row(NAME, f"latency per message, p99, {tag}", ms(percentile(latencies, 99)), "ms",
            ms(chain), "one chain's model time",
            Target("<=", 1.3, on="ratio", label="1.3× chain's model time")),
        # Where the time goes: every user's first message starts in the same instant; the later ones do not.
        Row(NAME, f"latency of each user's first message, p50, {tag}", ms(percentile(first, 50)), "ms",
            ms(chain), "one chain's model time"),
        Row(NAME, f"latency of the later messages, p50, {tag}", ms(percentile(later, 50)), "ms",
            ms(chain), "one chain's model time"),
    ]
    return rows if full else [rows[0], rows[2], rows[3]]


async def _bare_http(url: str, callers: int, latency: float, bodies: list[dict[str, Any]], what: str) -> Row:
    """Bare HTTP alone, as many callers at once, sending `bodies` in turn: the most this machine and the fake
    server let through, before membot does anything."""
    client = BareHttp(url)
    calls = CALLS_PER_CHAIN * MESSAGES

    async def caller() -> None:
        for index in range(calls):
            await client.post(bodies[index % len(bodies)])

    with stopwatch() as wall:
        await asyncio.gather(*(caller() for _ in range(callers)))
    await client.close()
    return Row(NAME, f"bare HTTP, {callers} callers, {what}, calls/s", callers * calls / wall[0], "calls/s",
               callers / latency, "ideal: callers ÷ latency", note="no membot")


async def _membot_bodies() -> list[dict[str, Any]]:
    """The two requests of one message's chain, as membot sends them (caught by a scripted model here)."""
    async with scripted_model("chain") as model, open_service(model) as service:
        for index in range(2):
            await drain(service.chat(user("sample"), f"Message {index}: I like tea."))
        return model.requests[-CALLS_PER_CHAIN:]


async def _conversation(service: BotService, name: str, messages: int) -> list[float]:
    """Seconds per message for one user sending `messages` messages in turn."""
    samples = []
    for index in range(messages):
        with stopwatch() as elapsed:
            await drain(service.chat(user(name), f"Message {index}: I like tea."))
        samples.append(elapsed[0])
    return samples
