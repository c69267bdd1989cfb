"""The platform-free monologue queue: packing, order, the cap and its notice, pacing on 429s, refusals to
the log with back-off, and the bounded drain at shutdown. No network: `send` is a local recorder."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import pytest

from membot.adapters.monologue_queue import Line, MonologueQueue, RateLimited, Refused, drop_notice, pack

LOGGER = "tests.monologue"


def lines(*texts: str) -> list[Line]:
    return [Line(f"[u] {t}", f"u: {t}") for t in texts]


class Channel:
    """A recording send(); `gate` (when set) holds every post until released, `fail` raises per call, `delay`
    is how long each post takes (`began`: when each one did)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.fail: list[BaseException] = []
        self.gate: asyncio.Event | None = None
        self.delay = 0.0
        self.began: list[float] = []
        self.calls = 0

    async def send(self, text: str) -> None:
        self.calls += 1
        self.began.append(asyncio.get_running_loop().time())
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail.pop(0)
        self.posts.append(text)


def make(channel: Channel, **kwargs: object) -> MonologueQueue:
    options: dict[str, object] = {"limit": 100, "name": "SETTING 5", "advice": "Fix it.",
                                  "logger": logging.getLogger(LOGGER), "retry_delay": 0.01, **kwargs}
    return MonologueQueue(channel.send, **options)  # type: ignore[arg-type]


def delivered_lines(channel: Channel) -> list[str]:
    return [line for post in channel.posts for line in post.split("\n")]


# ----- pure packing ------------------------------------------------------------------------------------------


def test_pack_takes_lines_in_order_while_they_fit() -> None:
    queue = deque(lines("aaaa", "bbbb", "cccc"))  # each "[u] xxxx" is 8 long; two plus a newline is 17
    text, taken = pack(queue, limit=17)
    assert text == "[u] aaaa\n[u] bbbb" and len(taken) == 2
    assert [line.post for line in queue] == ["[u] cccc"]


def test_pack_always_takes_one_line_even_when_it_is_too_long_alone() -> None:
    queue = deque(lines("x" * 50, "y"))
    text, taken = pack(queue, limit=20)
    assert text == "[u] " + "x" * 50 and len(taken) == 1 and len(queue) == 1


def test_pack_puts_the_notice_first_and_counts_it() -> None:
    queue = deque(lines("aaaa", "bbbb"))
    text, taken = pack(queue, limit=29, notice="N" * 12)  # 12 + 1 + 8, then 9 more: 30
    assert text == "N" * 12 + "\n[u] aaaa" and len(taken) == 1


def test_pack_measures_with_the_platforms_measure() -> None:
    queue = deque(lines("ab", "cd"))
    _, taken = pack(queue, limit=13, measure=lambda s: 2 * len(s))  # 12 each: only one fits
    assert len(taken) == 1


def test_drop_notice_reads_well() -> None:
    assert "1 monologue line dropped" in drop_notice(1)
    assert "12 monologue lines dropped" in drop_notice(12)


# ----- the queue -----------------------------------------------------------------------------------------


async def test_put_returns_at_once_and_lines_arrive_coalesced_in_order() -> None:
    channel = Channel()
    channel.gate = asyncio.Event()
    queue = make(channel, limit=2000)
    queue.put(lines("first"))
    await asyncio.sleep(0.01)  # the first post is under way (held at the gate)
    for i in range(10):
        queue.put(lines(f"a{i}", f"b{i}"))  # returns at once even though the channel is stuck
    assert queue.pending == 21 and channel.posts == []
    channel.gate.set()
    await queue.close()
    assert channel.posts[0] == "[u] first"
    assert len(channel.posts) == 2  # everything that piled up went in one post
    assert delivered_lines(channel) == ["[u] first"] + [f"[u] {p}{i}" for i in range(10) for p in "ab"]
    assert (queue.counters.produced, queue.counters.delivered, queue.counters.dropped) == (21, 21, 0)


async def test_posts_are_spaced_by_the_interval_and_what_waits_goes_together() -> None:
    channel = Channel()
    queue = make(channel, limit=2000, interval=0.6)
    queue.put(lines("one"))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    for i in range(5):
        queue.put(lines(f"more{i}"))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.15)
    assert len(channel.posts) == 1  # the second post waits for its turn...
    await asyncio.sleep(0.6)
    assert asyncio.get_running_loop().time() - started >= 0.5
    assert channel.posts == ["[u] one", "\n".join(f"[u] more{i}" for i in range(5))]
    await queue.close()


async def test_the_interval_runs_from_when_a_post_began_so_slow_posts_keep_the_rate() -> None:
    """A post that takes a while (a round trip, a wait under the bot's global limit) does not add its time to the
    spacing: posts of 0.25 s at an interval of 0.25 s begin 0.25 s apart, not 0.5."""
    channel = Channel()
    channel.delay = 0.25
    queue = make(channel, limit=10, interval=0.25)
    queue.put(lines("aaaa", "bbbb", "cccc"))  # 8 long each: one a post
    for _ in range(300):
        if len(channel.posts) == 3:
            break
        await asyncio.sleep(0.01)
    await queue.close()
    assert len(channel.posts) == 3
    gaps = [later - earlier for earlier, later in zip(channel.began, channel.began[1:], strict=False)]
    assert all(0.23 <= gap < 0.4 for gap in gaps), gaps


async def test_posts_never_pass_the_limit_unless_one_line_alone_does() -> None:
    channel = Channel()
    channel.gate = asyncio.Event()
    queue = make(channel, limit=50)
    queue.put(lines(*(f"line {i:02d}" for i in range(20))))  # 12 long each: 3 per post
    channel.gate.set()
    await queue.close()
    assert all(len(post) <= 50 for post in channel.posts)
    assert delivered_lines(channel) == [f"[u] line {i:02d}" for i in range(20)]


async def test_past_the_cap_the_oldest_go_and_the_next_post_says_how_many() -> None:
    channel = Channel()
    channel.gate = asyncio.Event()
    queue = make(channel, cap=5, limit=1000)
    queue.put(lines("head"))
    await asyncio.sleep(0.01)  # "head" is in flight; the next ones wait
    queue.put(lines(*(str(i) for i in range(8))))
    assert queue.counters.dropped == 3 and queue.pending == 6
    channel.gate.set()
    await queue.close()
    assert channel.posts[1].split("\n") == [drop_notice(3), "[u] 3", "[u] 4", "[u] 5", "[u] 6", "[u] 7"]
    c = queue.counters
    assert (c.produced, c.delivered, c.dropped, c.logged) == (9, 6, 3, 0)
    assert c.produced == c.delivered + c.dropped + c.logged


async def test_a_429_means_wait_and_post_again_not_a_broken_channel(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel()
    channel.fail = [RateLimited(0.05), RateLimited(0.05)]
    queue = make(channel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.put(lines("one"))
    await queue.close()
    assert channel.posts == ["[u] one"] and loop.time() - started >= 0.1
    assert queue.counters.delivered == 1 and queue.counters.logged == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_refusal_sends_the_monologue_to_the_log_with_one_warning_and_a_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    channel = Channel()
    channel.fail = [Refused("no access")]
    queue = make(channel, clock=lambda: now[0], retry_first=60.0)
    caplog.set_level(logging.INFO, LOGGER)
    queue.put(lines("one"))
    await asyncio.sleep(0.05)
    queue.put(lines("two"))  # backing off: straight to the log, the channel is not asked
    await asyncio.sleep(0.05)
    assert channel.calls == 1 and channel.posts == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SETTING 5: no access" in warnings[0] and "Fix it." in warnings[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == ["u: one", "u: two"]
    now[0] = 61.0  # the back-off is over: the channel is tried again, and works
    queue.put(lines("three"))
    await queue.close()
    assert channel.posts == ["[u] three"]
    c = queue.counters
    assert (c.produced, c.delivered, c.logged, c.dropped) == (3, 1, 2, 0)


async def test_the_back_off_doubles_while_the_channel_keeps_refusing() -> None:
    now = [0.0]
    channel = Channel()
    channel.fail = [Refused("gone"), Refused("gone")]
    queue = make(channel, clock=lambda: now[0], retry_first=60.0, retry_max=100.0)
    queue.put(lines("a"))
    await asyncio.sleep(0.02)
    now[0] = 61.0
    queue.put(lines("b"))  # tried again, refused again: now 100 s (doubled, capped)
    await asyncio.sleep(0.02)
    now[0] = 160.0
    queue.put(lines("c"))  # still backing off
    await asyncio.sleep(0.02)
    assert channel.calls == 2
    now[0] = 162.0
    queue.put(lines("d"))
    await queue.close()
    assert channel.posts == ["[u] d"]


async def test_other_failures_are_tried_again_then_logged(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel()
    channel.fail = [OSError("blip")]
    queue = make(channel)
    queue.put(lines("kept"))
    await queue.close()
    assert channel.posts == ["[u] kept"]
    channel.fail = [OSError("down")] * 3
    queue = make(channel, attempts=3)
    caplog.set_level(logging.INFO, LOGGER)
    queue.put(lines("lost"))
    await queue.close()
    assert queue.counters.logged == 1 and "u: lost" in caplog.messages


async def test_shutdown_drains_within_its_bound_and_logs_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel()
    channel.gate = asyncio.Event()  # never opens: the channel hangs
    queue = make(channel)
    caplog.set_level(logging.INFO, LOGGER)
    queue.put(lines("stuck"))
    await asyncio.sleep(0.01)
    queue.put(lines("waiting"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await queue.close(timeout=0.2)
    assert loop.time() - started < 1.0
    assert any("2 monologue lines" in m and "not posted before shutdown" in m for m in caplog.messages)
    assert "u: stuck" in caplog.messages and "u: waiting" in caplog.messages
    assert queue.counters.logged == 2 and queue.pending == 0
    queue.put(lines("late"))  # after close: the log, at once
    assert queue.counters.logged == 3 and "u: late" in caplog.messages


async def test_an_idle_queue_closes_at_once_and_a_new_loop_gets_a_new_task() -> None:
    channel = Channel()
    queue = make(channel)
    await queue.close()  # never started: nothing to do
    assert queue.counters.produced == 0
    other = make(channel)
    other.put(lines("x"))
    await asyncio.sleep(0.02)
    assert channel.posts == ["[u] x"]
    await other.close()


def test_put_without_a_running_loop_logs_the_lines(caplog: pytest.LogCaptureFixture) -> None:
    queue = make(Channel())
    caplog.set_level(logging.INFO, LOGGER)
    queue.put(lines("sync"))
    assert "u: sync" in caplog.messages and queue.counters.logged == 1
