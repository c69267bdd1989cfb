"""The fake Discord enforces Discord's REST rate limits, headers and all, and discord.py takes them for real ones.

Direct HTTP tests run on a ManualClock (no waiting); the discord.py ones use real time with short windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import discord.http
import pytest

from tests.fakes.discord_fake import FakeDiscord, patch_discord_py
from tests.fakes.discord_fake_limits import POST_MESSAGE
from tests.fakes.ratelimit import Limit, ManualClock

GUILD_ID = 500
CHANNEL_ID = 501
OTHER_CHANNEL_ID = 502
USER_ID = 42
HEADERS = {"Authorization": "Bot fake-token"}


def _populate(fake: FakeDiscord) -> None:
    fake.add_user(USER_ID, "alice")
    fake.add_guild(
        GUILD_ID,
        "Test Guild",
        channels=[{"id": CHANNEL_ID, "name": "general"}, {"id": OTHER_CHANNEL_ID, "name": "other"}],
        members=[{"id": USER_ID, "username": "alice"}],
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=HEADERS, trust_env=False) as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, fake: FakeDiscord, channel_id: int, text: str = "hi"
) -> tuple[int, Any, Any]:
    async with http.post(f"{fake.api_url}/channels/{channel_id}/messages", json={"content": text}) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_sixth_post_in_five_seconds_is_429_with_discords_headers(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with FakeDiscord(clock=clock) as fake:
        _populate(fake)
        buckets = set()
        first_post = clock.now
        for i in range(5):
            status, _, headers = await _post(http, fake, CHANNEL_ID, f"m{i}")
            assert status == 200
            assert headers["X-RateLimit-Limit"] == "5"
            assert headers["X-RateLimit-Remaining"] == str(4 - i)
            assert float(headers["X-RateLimit-Reset-After"]) == pytest.approx(5.0 - 0.5 * i)
            assert float(headers["X-RateLimit-Reset"]) == pytest.approx(first_post + 5.0, abs=0.01)
            assert headers["Via"] == "1.1 google"
            buckets.add(headers["X-RateLimit-Bucket"])
            clock.advance(0.5)

        status, body, headers = await _post(http, fake, CHANNEL_ID, "one too many")
        assert status == 429
        assert body == {"message": "You are being rate limited.", "retry_after": 2.5, "global": False}
        assert headers["Retry-After"] == "3"
        assert headers["X-RateLimit-Scope"] == "user"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert float(headers["X-RateLimit-Reset-After"]) == pytest.approx(2.5)
        assert headers["Via"] == "1.1 google"
        assert "X-RateLimit-Global" not in headers
        buckets.add(headers["X-RateLimit-Bucket"])
        assert len(buckets) == 1

        # The bucket is per channel (the major parameter); its id is the same for every channel.
        status, _, headers = await _post(http, fake, OTHER_CHANNEL_ID)
        assert status == 200 and headers["X-RateLimit-Remaining"] == "4"
        assert headers["X-RateLimit-Bucket"] in buckets

        clock.advance(2.5)  # the window that opened with the first post is over
        status, _, headers = await _post(http, fake, CHANNEL_ID, "after the reset")
        assert status == 200 and headers["X-RateLimit-Remaining"] == "4"

        # The refused post was not acted on: kept out of `calls` and the channel, counted apart.
        assert [m["content"] for m in fake.messages_in(CHANNEL_ID)][-1] == "after the reset"
        assert len(fake.messages_in(CHANNEL_ID)) == 6
        assert len(fake.calls_to("POST", "/channels/{id}/messages")) == 7
        assert [c.json["content"] for c in fake.rate_limited_calls] == ["one too many"]
        assert fake.limits.posts(CHANNEL_ID) == 6
        assert fake.limits.posts() == 7
        assert fake.limits.limited(POST_MESSAGE, str(CHANNEL_ID)) == 1
        assert fake.limits.limited(POST_MESSAGE, str(OTHER_CHANNEL_ID)) == 0
        assert fake.limits.counters.total(POST_MESSAGE).limited_per_100 == pytest.approx(100 / 7)


async def test_global_limit_and_interactions_escape_it(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with FakeDiscord(clock=clock) as fake:
        _populate(fake)
        for _ in range(50):
            async with http.get(f"{fake.api_url}/users/@me") as resp:
                assert resp.status == 200
                assert "X-RateLimit-Bucket" not in resp.headers  # this route has only the global limit
        async with http.get(f"{fake.api_url}/users/@me") as resp:
            assert resp.status == 429
            assert await resp.json() == {
                "message": "You are being rate limited.",
                "retry_after": 1.0,
                "global": True,
            }
            assert resp.headers["X-RateLimit-Global"] == "true"
            assert resp.headers["X-RateLimit-Scope"] == "global"
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["Via"] == "1.1 google"
        status, body, _ = await _post(http, fake, CHANNEL_ID)
        assert status == 429 and body["global"] is True

        # Interaction callbacks are not subject to the global limit (this one is unknown: 404, not 429).
        async with http.post(f"{fake.api_url}/interactions/1/tok/callback", json={"type": 4}) as resp:
            assert resp.status == 404
        assert fake.limits.counters.tally("global").limited == 2

        clock.advance(1.0)
        assert (await _post(http, fake, CHANNEL_ID))[0] == 200


async def test_limits_can_be_changed_or_turned_off(http: aiohttp.ClientSession) -> None:
    async with FakeDiscord(rate_limits=False) as fake:
        _populate(fake)
        for _ in range(12):
            status, _, headers = await _post(http, fake, CHANNEL_ID)
            assert status == 200 and "X-RateLimit-Limit" not in headers
        assert fake.limits.posts(CHANNEL_ID) == 12 and fake.limits.limited() == 0

    clock = ManualClock()
    async with FakeDiscord(rate_limits={POST_MESSAGE: Limit(2, 1.0)}, global_limit=None, clock=clock) as fake:
        _populate(fake)
        assert [(await _post(http, fake, CHANNEL_ID))[0] for _ in range(3)] == [200, 200, 429]
        fake.limits.set_route(POST_MESSAGE, None)
        assert [(await _post(http, fake, CHANNEL_ID))[0] for _ in range(8)] == [200] * 8


@pytest.fixture
async def dpy() -> AsyncIterator[tuple[FakeDiscord, discord.http.HTTPClient]]:
    """discord.py's own REST client, logged in to a fake whose post limit is 2 per second."""
    async with FakeDiscord(rate_limits={POST_MESSAGE: Limit(2, 1.0)}) as fake:
        _populate(fake)
        with patch_discord_py(fake):
            client = discord.http.HTTPClient(asyncio.get_running_loop())
            await client.static_login("fake-token")
            try:
                yield fake, client
            finally:
                await client.close()


async def _send(client: discord.http.HTTPClient, channel_id: int, text: str) -> Any:
    with discord.http.handle_message_parameters(content=text) as params:
        return await client.send_message(channel_id, params=params)


async def test_discord_py_waits_out_a_429_and_succeeds(
    dpy: tuple[FakeDiscord, discord.http.HTTPClient], http: aiohttp.ClientSession
) -> None:
    fake, client = dpy
    # Someone else (another process with the same token) used up the bucket: discord.py cannot know.
    assert [(await _post(http, fake, CHANNEL_ID))[0] for _ in range(3)] == [200, 200, 429]
    started = time.monotonic()
    message = await _send(client, CHANNEL_ID, "through discord.py")
    assert message["content"] == "through discord.py"
    assert time.monotonic() - started >= 0.5  # it slept retry_after instead of raising
    assert fake.limits.limited(POST_MESSAGE, str(CHANNEL_ID)) == 2
    assert fake.rate_limited_calls[-1].json["content"] == "through discord.py"


async def test_discord_py_paces_itself_from_the_headers(
    dpy: tuple[FakeDiscord, discord.http.HTTPClient],
) -> None:
    fake, client = dpy
    started = time.monotonic()
    for i in range(5):
        await _send(client, CHANNEL_ID, f"paced {i}")
    # 5 posts at 2 per second: two waits for the bucket to reset, and discord.py never got a 429.
    assert time.monotonic() - started >= 1.5
    assert fake.limits.posts(CHANNEL_ID) == 5
    assert fake.limits.limited() == 0


async def test_discord_py_waits_out_the_global_limit(
    dpy: tuple[FakeDiscord, discord.http.HTTPClient],
) -> None:
    fake, client = dpy
    fake.limits.global_limit = Limit(1, 0.5)
    started = time.monotonic()
    first, second = await asyncio.gather(
        _send(client, CHANNEL_ID, "one"), _send(client, OTHER_CHANNEL_ID, "two")
    )
    assert {first["content"], second["content"]} == {"one", "two"}
    assert fake.limits.counters.tally("global").limited >= 1
    assert time.monotonic() - started >= 0.3
