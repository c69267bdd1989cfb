"""The fake Slack enforces Slack's Web API rate limits (429 + Retry-After), and slack_sdk takes them for real ones.

Direct HTTP tests run on a ManualClock (no waiting); the slack_sdk ones use real time.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.ratelimit import Limit, ManualClock
from tests.fakes.slack_fake import FakeSlack


async def _call(
    session: aiohttp.ClientSession, fake: FakeSlack, method: str, **params: Any
) -> tuple[int, dict[str, Any], Any]:
    headers = {"Authorization": f"Bearer {fake.bot_token}"}
    async with session.post(fake.api_url + method, json=params, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_post_message_is_one_per_second_per_channel_with_a_short_burst() -> None:
    clock = ManualClock()
    async with FakeSlack(clock=clock) as fake, aiohttp.ClientSession(trust_env=False) as session:
        statuses = [(await _call(session, fake, "chat.postMessage", channel="C1", text=f"m{i}"))[0] for i in range(3)]
        assert statuses == [200, 200, 200]  # the burst

        status, body, headers = await _call(session, fake, "chat.postMessage", channel="C1", text="too many")
        assert status == 429
        assert body == {"ok": False, "error": "ratelimited"}
        assert headers["Retry-After"] == "1"

        # Per channel: another channel (and the DM a user id posts into) has its own allowance.
        assert (await _call(session, fake, "chat.postMessage", channel="C2", text="elsewhere"))[0] == 200
        assert (await _call(session, fake, "chat.postMessage", channel="U1", text="dm"))[0] == 200

        clock.advance(1.0)  # one second buys one message
        assert (await _call(session, fake, "chat.postMessage", channel="C1", text="later"))[0] == 200
        assert (await _call(session, fake, "chat.postMessage", channel="C1", text="again"))[0] == 429

        # Refused calls were not acted on: not in `calls` nor in the channel, but counted.
        assert [c.params["text"] for c in fake.rate_limited_calls] == ["too many", "again"]
        assert len(fake.calls_to("chat.postMessage")) == 6
        assert sum(1 for channel, _ in fake.messages if channel == "C1") == 4
        assert fake.limits.posts("C1") == 4 and fake.limits.posts("D1") == 1 and fake.limits.posts() == 6
        assert fake.limits.limited("chat.postMessage", "C1") == 2
        assert fake.limits.limited("chat.postMessage", "C2") == 0
        assert fake.limits.counters.total("chat.postMessage").limited_per_100 == pytest.approx(100 * 2 / 6)


async def test_other_methods_are_limited_by_their_tier() -> None:
    clock = ManualClock()
    async with FakeSlack(clock=clock) as fake, aiohttp.ClientSession(trust_env=False) as session:
        fake.add_user("U1", "alice")
        # users.info is Tier 4 (100+ a minute) for the whole workspace, whichever user is asked about.
        for _ in range(100):
            assert (await _call(session, fake, "users.info", user="U1"))[0] == 200
        status, body, headers = await _call(session, fake, "users.info", user="UBOT")
        assert (status, body["error"], headers["Retry-After"]) == (429, "ratelimited", "1")

        # chat.update is Tier 3 (50+ a minute): a refill every 1.2 s, so Retry-After rounds up to 2.
        for _ in range(50):
            assert (await _call(session, fake, "chat.update", channel="C1", ts="1.000001", text="x"))[0] == 200
        status, _, headers = await _call(session, fake, "chat.update", channel="C1", ts="1.000001", text="x")
        assert (status, headers["Retry-After"]) == (429, "2")

        clock.advance(1.2)
        assert (await _call(session, fake, "chat.update", channel="C1", ts="1.000001", text="x"))[0] == 200
        assert fake.limits.limited("users.info") == 1 and fake.limits.limited("chat.update") == 1


async def test_limits_can_be_changed_or_turned_off() -> None:
    async with FakeSlack(rate_limits=False) as fake, aiohttp.ClientSession(trust_env=False) as session:
        for _ in range(10):
            assert (await _call(session, fake, "chat.postMessage", channel="C1", text="x"))[0] == 200
        assert fake.limits.posts("C1") == 10 and fake.limits.limited() == 0

    clock = ManualClock()
    async with (
        FakeSlack(rate_limits={"chat.postMessage": Limit(1, 1.0, burst=1)}, clock=clock) as fake,
        aiohttp.ClientSession(trust_env=False) as session,
    ):
        statuses = [(await _call(session, fake, "chat.postMessage", channel="C1", text="x"))[0] for _ in range(2)]
        assert statuses == [200, 429]
        fake.limits.enabled = False
        assert (await _call(session, fake, "chat.postMessage", channel="C1", text="x"))[0] == 200


async def test_injected_429s_still_work_and_come_first() -> None:
    async with FakeSlack(clock=ManualClock()) as fake, aiohttp.ClientSession(trust_env=False) as session:
        fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=7)
        status, body, headers = await _call(session, fake, "chat.postMessage", channel="C1", text="x")
        assert (status, body["error"], headers["Retry-After"]) == (429, "ratelimited", "7")
        assert fake.calls[-1].status == 429  # injected failures stay in `calls`, as before
        assert fake.limits.limited() == 0 and fake.limits.posts() == 0
        assert (await _call(session, fake, "chat.postMessage", channel="C1", text="x"))[0] == 200


async def test_slack_sdk_sees_a_real_429() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        for i in range(3):
            await client.chat_postMessage(channel="C1", text=f"burst {i}")
        with pytest.raises(SlackApiError) as limited:
            await client.chat_postMessage(channel="C1", text="one too many")
        assert limited.value.response.status_code == 429
        assert limited.value.response["error"] == "ratelimited"
        assert limited.value.response.headers["Retry-After"] == "1"


async def test_slack_sdk_retry_handler_waits_for_retry_after_and_succeeds() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(
            token=fake.bot_token,
            base_url=fake.api_url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
        )
        for i in range(3):
            await client.chat_postMessage(channel="C1", text=f"burst {i}")
        started = time.monotonic()
        response = await client.chat_postMessage(channel="C1", text="after a retry")
        assert response["ok"] and response["message"]["text"] == "after a retry"
        assert time.monotonic() - started >= 1.0  # slept Retry-After (plus slack_sdk's jitter)
        assert fake.limits.limited("chat.postMessage", "C1") == 1
        assert fake.limits.posts("C1") == 4
