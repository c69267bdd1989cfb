"""The bot's share of Discord's global limit (membot/adapters/discord/pacing.py): every request to the API
counted as it is sent, waiting its turn rather than meeting a global 429; what can be left out or can wait
gives way while the second fills up."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import discord.http
import pytest
import yarl

from membot.adapters.discord.client import global_share, typing
from membot.adapters.discord.pacing import GlobalPacer, OptionalBudget
from membot.adapters.live_reply import Budget
from tests.fakes.discord_fake import FakeDiscord, patch_discord_py
from tests.fakes.ratelimit import Limit

HEADERS = {"Authorization": "Bot fake-token"}


def test_only_requests_under_the_global_limit_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", "http://127.0.0.1:8123/api/v10")
    counts = GlobalPacer.counts
    assert counts(yarl.URL("http://127.0.0.1:8123/api/v10/channels/5/messages"))
    assert counts(yarl.URL("http://127.0.0.1:8123/api/v10/channels/5/typing"))
    # Interaction callbacks and follow-ups are not under it; nor are files on the CDN or the gateway.
    assert not counts(yarl.URL("http://127.0.0.1:8123/api/v10/interactions/1/tok/callback"))
    assert not counts(yarl.URL("http://127.0.0.1:8123/api/v10/webhooks/1/tok"))
    assert not counts(yarl.URL("http://127.0.0.1:8123/attachments/1/a.txt"))
    assert not counts(yarl.URL("http://127.0.0.1:9999/api/v10/channels/5/messages"))
    assert not counts(yarl.URL("ws://gateway.example/?v=10"))


async def _burst(fake: FakeDiscord, pacer: GlobalPacer | None, requests: int) -> list[int]:
    traces = [pacer.trace()] if pacer is not None else []
    async with aiohttp.ClientSession(headers=HEADERS, trust_env=False, trace_configs=traces) as http:

        async def one() -> int:
            async with http.get(f"{fake.api_url}/users/@me") as response:
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(requests))))


async def test_requests_past_the_global_limit_wait_their_turn_instead_of_meeting_429s() -> None:
    async with FakeDiscord(global_limit=Limit(4, 0.3)) as fake:
        with patch_discord_py(fake):
            # Without the pacer, a burst past the limit meets 429s...
            assert 429 in await _burst(fake, None, 9)
            await asyncio.sleep(0.35)
            fake.limits.reset()
            # ...with it (the same limit, counted a little longer), each waits until the second has room.
            started = time.monotonic()
            assert await _burst(fake, GlobalPacer(4, 0.32), 9) == [200] * 9
            assert time.monotonic() - started >= 0.6  # three windows' worth: two waits
            assert fake.limits.limited() == 0


def test_optional_requests_are_skipped_while_half_the_second_is_spent() -> None:
    pacer = GlobalPacer(10, 1.0)
    optional = OptionalBudget(8, 1.0, pacer)
    now = time.monotonic()
    assert optional.free(now)
    for _ in range(5):
        pacer.sent.spend(now)  # replies going out: five of the ten
    assert not optional.free(now)
    assert optional.free(now + 1.0)  # they left the window
    # Its own limit holds too, whatever the pacer has.
    for _ in range(8):
        optional.spend(now + 1.0)
    assert not optional.free(now + 1.0)


async def test_a_post_that_can_wait_waits_until_the_second_has_room_to_spare() -> None:
    pacer = GlobalPacer(4, 0.3)
    assert pacer.spare_now(time.monotonic())
    await asyncio.wait_for(pacer.spare(), 0.05)  # nothing sent: at once
    for _ in range(3):
        pacer.sent.spend(time.monotonic())
    started = time.monotonic()
    await pacer.spare()
    # Three of four spent: it went once two were free again, when the oldest left the window.
    assert 0.25 <= time.monotonic() - started < 1.0
    assert pacer.room(time.monotonic()) > pacer.keep


async def test_the_typing_indicator_is_renewed_only_while_optional_requests_may_go() -> None:
    sent: list[float] = []

    class Channel:
        def typing(self) -> object:  # discord.py's: awaited, one indicator
            async def one() -> None:
                sent.append(time.monotonic())

            return one()

    async with typing(Channel(), Budget(2, 60.0), delay=0.0, renew=0.05):  # type: ignore[arg-type]
        await asyncio.sleep(0.4)
    assert len(sent) == 2  # renewed once, then the budget of two was spent: no more, however long the wait
    sent.clear()
    async with typing(Channel(), Budget(5, 60.0), delay=0.2, renew=0.05):  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
    assert not sent  # a quick answer shows none


async def test_an_optional_budget_waits_for_the_pacer_to_have_some_to_spare() -> None:
    pacer = GlobalPacer(limit=4, window=0.3)
    optional = OptionalBudget(10, 1.0, pacer)
    for _ in range(3):
        await pacer.sent.take()
    now = time.monotonic()
    assert not optional.free(now) and optional.until(now) > 0.1


async def test_requests_waiting_for_the_global_limit_go_in_the_order_they_came() -> None:
    pacer = GlobalPacer(limit=3, window=0.2)
    order: list[int] = []

    async def request(number: int) -> None:
        await pacer.sent.take()
        order.append(number)

    tasks = []
    for number in range(12):  # four windows' worth, each asking a moment after the one before
        tasks.append(asyncio.create_task(request(number)))
        await asyncio.sleep(0.005)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == list(range(12))


def test_a_process_running_some_shards_takes_their_share_of_the_global_limit() -> None:
    assert global_share(50, None) == 50
    assert global_share(50, ([0, 1, 2, 3], 4)) == 50
    assert global_share(50, ([1], 4)) == 12
    assert global_share(50, ([5], 100)) == 1  # never none
