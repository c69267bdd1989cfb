"""Platform: what users feel when many of them write at once, through the real Discord and Slack adapters
against the test suite's fake Discord and fake Slack, with the platforms' rate limits on (as the fakes enforce
them by default: Discord 5 posts / 5 s per channel and 50 requests/s for the bot; Slack chat.postMessage about
1/s per channel with a burst of 3, tiers for the other methods).

N users each write 3 messages in their own DM, all users at once; each sends the next message when the reply
to the previous one arrives, as a person does. Every message runs a chain of two model calls (a core memory
edit with request_heartbeat, then send_message), so each step puts several monologue lines (thoughts,
function calls) in the queue of the ONE monologue channel all agents share, as in production. The scripted
model runs in two processes of its own (as in the concurrency bench), answering at once or after 1 s a call;
the fake platform and the users run in a third (`bench/platform_world.py`), so that the bot's process holds
the bot alone, as in production.

A reply's latency runs from the user's message being sent (the gateway event dispatched / the Events API
request posted) to the reply being received by the fake (the request that posted it, stamped as the fake
records it), both in the world's process. The baseline is one user alone, same bot, same run, just before; "p99 added by other users" is
p99(N) − p99(one user). Agents are created before the clock starts (their first message only loads them).
After each group and a second for its last steps to end, the monologue queue gets a bounded drain (wait
until nothing is pending), then its counters say what became of every line: delivered to the channel, logged
instead, dropped, or still pending.
429s are those the fakes answered, over every route the bot used during the group and its drain, per 100
messages posted (replies and monologue posts).

Streamed (MEMBOT_STREAM, on as in production): the model thinks STREAM_LATENCY, then writes its call over
about a second, chunk by chunk, and its reply is three sentences (LONG_REPLY). The reply then shows as a post
that is edited in place; "first words" is the post, "final text" the post or edit that carries the whole
reply. Each user sends their next message once the final text is there.

BENCH_PLATFORM_ONLY, BENCH_PLATFORM_USERS and BENCH_PLATFORM_MODEL run a part of it (see `Only`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import Row, Target, log, model_process, ms, open_service, percentile
from bench.platform_world import LOG_CHANNEL, MESSAGES, Snapshot, World, Written, world_process
from membot.adapters.discord.client import MembotClient
from membot.adapters.discord.people import AGENT_SCOPE
from membot.adapters.discord.people import PLATFORM as DISCORD
from membot.adapters.discord.runner import run_discord
from membot.adapters.monologue_queue import Counters as QueueCounters
from membot.adapters.monologue_queue import MonologueQueue
from membot.adapters.slack.app import SlackAdapter
from membot.adapters.slack.people import PLATFORM as SLACK
from membot.adapters.slack.runner import http_runner
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from tests.fakes.discord_fake_limits import POST_MESSAGE

NAME = "platform"
SLACK_LOG = "CLOG"
#: Seconds for the last steps to end after their replies (they commit, then queue their monologue lines).
SETTLE = 1.0
#: After the slowest Discord window (5 s), so that each group starts with every bucket full again.
COOLDOWN = 5.5
#: The issue's targets for the time other users add to a reply's p99.
ADDED_P99_TARGET = {12: 0.3, 50: 1.0}
#: The streamed model: seconds before its first chunk, and between chunks (about 40 chunks a call).
STREAM_LATENCY, STREAM_DELAY = 0.5, 0.025


@dataclass
class Group:
    """What one group of users at once gave."""

    users: int
    latencies: list[float]  # seconds, every message of every user
    wall: float  # seconds from the first message sent to the last reply
    drain: float  # seconds the monologue took to empty after the last reply (bounded)
    monologue: QueueCounters  # this group's share of the queue's counters
    pending: int  # lines still waiting after the bounded drain
    requests: dict[str, tuple[int, int]]  # route or method -> (let through, answered 429)
    posts: int  # messages created (replies and monologue posts)
    global_429: int = 0  # Discord: 429s of the global limit (also counted under their route)
    log_429: int = 0  # 429s answered to posts in the monologue channel
    cpu: float = 0.0  # CPU seconds the bot's process spent while the users wrote (bot and its threads)
    world_cpu: float = 0.0  # CPU seconds the fake platform and its users spent meanwhile, in their process
    lag: float = 0.0  # the bot's event loop's worst lateness meanwhile (seconds a ready task waited its turn)
    finals: list[float] = field(default_factory=list)  # streamed: seconds to the whole reply, every message
    edits: int = 0  # streamed: edits of posted replies


@dataclass
class Platform:
    """One platform's bot in this process, and the world (its fake and the users) it talks to."""

    name: str
    service: BotService
    queue: MonologueQueue
    world: World
    identity: Callable[[Any], UserRef]  # a user id of the world -> who they are to the bot
    post_route: str
    log_major: Hashable  # the monologue channel, as the fake's counters key it
    edit_route: str
    events_url: str = ""  # Slack: where the bot takes events


# ----- the two bots ----------------------------------------------------------------------------------------


@asynccontextmanager
async def discord_bot(url: str, **extra: Any) -> AsyncIterator[Platform]:
    """The Discord adapter (`run_discord`) on the fake Discord; `extra` settings for the service (a database)."""
    async with world_process("discord") as world:
        env = {"DISCORD_TOKEN": "fake-token", "DISCORD_MONOLOGUE_CHANNEL_ID": LOG_CHANNEL,
               "MEMBOT_DISCORD_API_URL": world.info["api_url"],
               "MEMBOT_DISCORD_GATEWAY_URL": world.info["gateway_url"]}
        async with open_service(url, **env, **extra) as service:
            # run_discord, as `membot serve` runs it; its client is caught as it is made, to read its queue.
            made: list[MembotClient] = []
            original = MembotClient.__init__

            def catch(self: MembotClient, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                made.append(self)

            MembotClient.__init__ = catch  # type: ignore[method-assign]
            stop = asyncio.Event()
            task = asyncio.create_task(run_discord(service, service.settings, stop, guild_ready_timeout=0.1))
            try:
                await world.call("wait_connected", 30)
            finally:
                MembotClient.__init__ = original  # type: ignore[method-assign]
            try:
                yield Platform("Discord", service, made[0].monologue.queue, world,
                               lambda user_id: UserRef(DISCORD, AGENT_SCOPE, str(user_id)), POST_MESSAGE,
                               str(LOG_CHANNEL), "PATCH /channels/{channel_id}/messages/{message_id}")
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)


@asynccontextmanager
async def slack_bot(url: str, **extra: Any) -> AsyncIterator[Platform]:
    """The Slack adapter (bolt over HTTP, as `membot serve`) on the fake Slack; `extra` as for discord_bot."""
    async with world_process("slack") as world:
        info = world.info
        env = {"SLACK_BOT_TOKEN": info["bot_token"], "SLACK_SIGNING_SECRET": info["signing_secret"],
               "SLACK_MONOLOGUE_CHANNEL": SLACK_LOG, "MEMBOT_SLACK_API_URL": info["api_url"], "MEMBOT_SLACK_PORT": 0}
        async with open_service(url, **env, **extra) as service:
            adapter = SlackAdapter(service, service.settings, file_shared_grace=0.0)
            assert adapter.poster.monologue is not None
            async with adapter.connections():  # as run_slack does
                runner = await http_runner(adapter, service.settings, host="127.0.0.1")
                try:
                    yield Platform("Slack", service, adapter.poster.monologue, world,
                                   lambda user_id: UserRef(SLACK, info["team_id"], user_id), "chat.postMessage",
                                   SLACK_LOG, "chat.update",
                                   f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events")
                finally:
                    await runner.cleanup()
                    await adapter.inflight.drain(10.0)
                    await adapter.poster.close()


# ----- one group of users at once --------------------------------------------------------------------------


async def _group(bot: Platform, first_serial: int, users: int, drain_bound: float, streamed: bool = False) -> Group:
    people = await bot.world.call("register", first_serial, users)
    for user in people:
        await bot.service.agent_id(bot.identity(user))  # created before the clock starts
    before_requests: Snapshot = await bot.world.call("snapshot")
    before_queue = QueueCounters(**vars(bot.queue.counters))

    lateness: list[float] = []
    watch = asyncio.create_task(_watch_loop(lateness))
    cpu = time.process_time()
    written: Written = await bot.world.call("write", people, streamed, bot.events_url)
    cpu = time.process_time() - cpu
    watch.cancel()
    # A step puts its monologue lines in the queue when it ends, a moment after its reply was posted: the last
    # steps' lines must be in before "nothing pending" means drained, or they count in the next group.
    await asyncio.sleep(SETTLE)
    drained = time.perf_counter()
    deadline = drained + drain_bound
    while bot.queue.pending and time.perf_counter() < deadline:  # noqa: ASYNC110 - no event says "empty"
        await asyncio.sleep(0.05)
    drain = time.perf_counter() - drained
    after = bot.queue.counters
    monologue = QueueCounters(*(getattr(after, f) - getattr(before_queue, f)
                                for f in ("produced", "delivered", "logged", "dropped")))
    now: Snapshot = await bot.world.call("snapshot")
    requests = _delta(before_requests, now)
    requests.pop("global", None)

    def new_429s(key: tuple[str, Hashable]) -> int:
        return now.get(key, (0, 0))[1] - before_requests.get(key, (0, 0))[1]

    return Group(users, written.latencies, written.wall, drain, monologue, bot.queue.pending,
                 requests, requests.get(bot.post_route, (0, 0))[0], new_429s(("global", None)),
                 new_429s((bot.post_route, bot.log_major)), cpu, written.cpu, max(lateness, default=0.0),
                 written.finals, requests.get(bot.edit_route, (0, 0))[0])


async def _watch_loop(lateness: list[float], tick: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleeper: the time any ready task (a reply) waits for the CPU."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(tick)
        lateness.append(time.perf_counter() - before - tick)


def _delta(before: Snapshot, after: Snapshot) -> dict[str, tuple[int, int]]:
    """Per route (all its channels together): requests let through and 429s since `before`."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, (allowed, limited) in after.items():
        was = before.get(key, (0, 0))
        out[key[0]][0] += allowed - was[0]
        out[key[0]][1] += limited - was[1]
    return {route: (a, b) for route, (a, b) in out.items() if a or b}


# ----- the benchmark ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Only:
    """Which groups to run (all by default), from the environment, to look at one of them alone:
    BENCH_PLATFORM_ONLY names platforms (discord, slack), BENCH_PLATFORM_USERS group sizes (50), and
    BENCH_PLATFORM_MODEL the model runs (0, 1000 or streamed), each a comma-separated list."""

    platforms: frozenset[str] | None = None
    users: frozenset[int] | None = None
    models: frozenset[str] | None = None

    @classmethod
    def from_env(cls) -> Only:
        def listed(name: str) -> frozenset[str] | None:
            value = os.environ.get(name, "").strip()
            return frozenset(v.strip().lower() for v in value.split(",") if v.strip()) if value else None

        users = listed("BENCH_PLATFORM_USERS")
        return cls(listed("BENCH_PLATFORM_ONLY"), None if users is None else frozenset(map(int, users)),
                   listed("BENCH_PLATFORM_MODEL"))

    def platform(self, name: str) -> bool:
        return self.platforms is None or name.lower() in self.platforms

    def model(self, name: str) -> bool:
        return self.models is None or name in self.models

    def sizes(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        return sizes if self.users is None else tuple(n for n in sizes if n in self.users)


async def run(quick: bool) -> list[Row]:
    sizes, delays, drain_bound = ((3,), (0.0, 0.2), 20.0) if quick else ((12, 50), (0.0, 1.0), 60.0)
    only = Only.from_env()
    sizes = only.sizes(sizes)
    openers = [o for name, o in (("discord", discord_bot), ("slack", slack_bot)) if only.platform(name)]
    rows: list[Row] = []
    for delay in [d for d in delays if only.model(f"{ms(d):.0f}")]:
        async with model_process("chain", delay, processes=2) as url:
            for opener in openers:
                async with opener(url) as bot:
                    rows += await _measure(bot, sizes, delay, drain_bound)
    if not only.model("streamed"):
        return rows
    async with model_process("chain_long", STREAM_LATENCY, processes=2, stream_delay=STREAM_DELAY) as url:
        for opener in openers:
            async with opener(url) as bot:
                rows += await _measure(bot, sizes, STREAM_LATENCY, drain_bound, streamed=True)
    return rows


async def _measure(
    bot: Platform, sizes: tuple[int, ...], delay: float, drain_bound: float, streamed: bool = False
) -> list[Row]:
    tag = f"{bot.name}, model {ms(delay):.0f} ms/call" + (", streamed over ~1 s" if streamed else "")
    log(f"{tag}: one user alone")
    alone = await _group(bot, 0, 1, drain_bound, streamed)
    _report(tag, alone)
    rows: list[Row] = []
    serial = 1
    for users in sizes:
        await asyncio.sleep(COOLDOWN)
        log(f"{tag}: {users} users at once")
        group = await _group(bot, serial, users, drain_bound, streamed)
        serial += users
        _report(tag, group)
        rows += _rows(tag, group, alone, delay)
        if streamed:
            rows += _streamed_rows(tag, group, alone)
    return rows


def _streamed_rows(tag: str, group: Group, alone: Group) -> list[Row]:
    """The whole reply's times beside the first words', and how many edits showed it growing."""
    n, name = group.users, f"{NAME}, {tag}"
    p99, p99_1 = percentile(group.finals, 99), percentile(alone.finals, 99)
    first = percentile(group.latencies, 50)
    return [
        Row(name, f"{n} users: final text p50", ms(percentile(group.finals, 50)), "ms",
            ms(percentile(alone.finals, 50)), "one user alone, p50", note=f"first words p50: {ms(first):.0f} ms"),
        Row(name, f"{n} users: final text p99", ms(p99), "ms", ms(p99_1), "one user alone, p99"),
        Row(name, f"{n} users: edits per reply", group.edits / max(len(group.finals), 1), "edits",
            note=f"{group.edits} edits for {len(group.finals)} replies"),
    ]


def _report(tag: str, group: Group) -> None:
    m = group.monologue
    log(f"  {tag}, {group.users} users: p50 {ms(percentile(group.latencies, 50)):.0f} ms, "
        f"p99 {ms(percentile(group.latencies, 99)):.0f} ms, wall {group.wall:.1f} s, CPU bot {group.cpu:.1f} s "
        f"world {group.world_cpu:.1f} s, "
        f"loop lag max {ms(group.lag):.0f} ms; monologue produced "
        f"{m.produced} delivered {m.delivered} logged {m.logged} dropped {m.dropped} pending {group.pending} "
        f"(drain {group.drain:.1f} s); requests (ok, 429) {group.requests}; global 429s {group.global_429}, "
        f"429s in the monologue channel {group.log_429}")


def _rows(tag: str, group: Group, alone: Group, delay: float) -> list[Row]:
    n = group.users
    p50, p99 = percentile(group.latencies, 50), percentile(group.latencies, 99)
    p50_1, p99_1 = percentile(alone.latencies, 50), percentile(alone.latencies, 99)
    added_limit = ADDED_P99_TARGET.get(n, ADDED_P99_TARGET[12])
    m = group.monologue
    limited = sum(b for _, b in group.requests.values())
    per_100 = 100 * limited / group.posts if group.posts else 0.0
    routes = ", ".join(f"{route} {ok}" + (f" ({bad} × 429)" if bad else "")
                       for route, (ok, bad) in sorted(group.requests.items()))
    where = f"{group.log_429} of the 429s in the monologue channel"
    if group.global_429:
        where += f", {group.global_429} from the global limit"
    name = f"{NAME}, {tag}"
    one = "one user alone"
    accounted = m.delivered + m.logged + m.dropped
    return [
        Row(name, f"{n} users: reply p50", ms(p50), "ms", ms(p50_1), f"{one}, p50",
            note=f"{n} users × {MESSAGES} messages, 2 model calls each; wall {group.wall:.1f} s"),
        Row(name, f"{n} users: reply p99", ms(p99), "ms", ms(p99_1), f"{one}, p99"),
        Row(name, f"{n} users: p99 added by other users", ms(p99 - p99_1), "ms",
            note=f"the bot's process CPU time {100 * group.cpu / group.wall:.0f}% of the wall (the fakes' "
                 f"{100 * group.world_cpu / group.wall:.0f}%, in their own), its event loop up to "
                 f"{ms(group.lag):.0f} ms late",
            target=Target("<=", ms(added_limit), label=f"{added_limit:g} s")),
        Row(name, f"{n} users: monologue lines delivered / produced", 100 * m.delivered / max(m.produced, 1), "%",
            note=f"{m.delivered}/{m.produced} delivered, {m.logged} logged, {m.dropped} dropped, "
                 f"{group.pending} pending after a drain of {group.drain:.1f} s"),
        Row(name, f"{n} users: monologue lines not accounted for after the drain", m.produced - accounted, "lines",
            target=Target("<=", 0, label="0 (every line delivered, logged or dropped)")),
        Row(name, f"{n} users: 429s per 100 posts", per_100, "per 100", note=f"{limited} 429s ({where}), "
            f"{group.posts} posts; requests by route: {routes}", target=Target("<=", 1.0)),
    ]
