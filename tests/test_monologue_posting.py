"""The monologue never slows a reply: the real adapters over the fake Discord and Slack, with the monologue
channel made slow (429s) or refusing (403/404, channel_not_found). Replies must come at once, the monologue
later (coalesced, in order), and a refusing channel must send the monologue to the log with one warning."""

# ruff: noqa: ASYNC109 - helpers take timeout= like the fakes' waiting helpers

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.discord.render import units
from membot.adapters.discord.runner import run_discord
from membot.adapters.slack.posting import Poster
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.conftest import make_settings
from tests.fakes import discord_fake_rest
from tests.fakes.discord_fake import FakeDiscord
from tests.fakes.openai_server import ScriptedModel, send
from tests.fakes.slack_fake import FakeSlack
from tests.test_slack_adapter import serving

LOG = 502
ALICE = 42
USERS = {ALICE + i: f"user{i}" for i in range(12)}  # alice is user0
WAIT = 10.0


async def until(check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll for what no fake records (log lines)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - log records come with no event to wait on
            await asyncio.sleep(0.02)


# ----- Discord ---------------------------------------------------------------------------------------------


@dataclass
class LogChannel:
    """What the fake's monologue channel answers: `limited` 429s first (Discord's own, which discord.py
    waits out by itself), or `refuse` (403/404) every time."""

    limited: int = 0
    retry_after: float = 1.0
    refuse: int | None = None
    bare: bool = False  # a 429 discord.py does not handle itself
    attempts: list[float] = field(default_factory=list)

    def answer(self) -> web.Response | None:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.refuse == 403:
            return discord_fake_rest.error(403, 50001, "Missing Access")
        if self.refuse == 404:
            return discord_fake_rest.error(404, 10003, "Unknown Channel")
        if self.limited > 0:
            self.limited -= 1
            headers = {"Retry-After": str(self.retry_after), "X-RateLimit-Scope": "user"}
            if self.bare:
                # A 429 that is not Discord's JSON (a proxy's, Cloudflare's): discord.py raises at once,
                # and the queue waits as Retry-After says.
                return web.Response(status=429, text="slow down", headers=headers)
            body = {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": False}
            response = discord_fake_rest.json_response(body, 429)
            # Discord's own 429 (Via: it is behind Google's front end): discord.py waits it out by itself.
            response.headers.update({**headers, "Via": "1.1 google"})
            return response
        return None


@pytest.fixture
def log_channel(monkeypatch: pytest.MonkeyPatch) -> LogChannel:
    channel = LogChannel()
    original = discord_fake_rest._Routes.post_message

    async def post_message(self: Any, request: web.Request) -> web.Response:
        if int(request.match_info["channel_id"]) == LOG and (answer := channel.answer()) is not None:
            return answer
        return await original(self, request)

    # Patched before the fake starts (its routes bind the method then); the fake's files stay as they are.
    monkeypatch.setattr(discord_fake_rest._Routes, "post_message", post_message)
    return channel


class TestDiscord:
    @pytest.fixture
    async def fake(self, log_channel: LogChannel) -> AsyncIterator[FakeDiscord]:
        async with FakeDiscord() as fake:
            for user_id, name in USERS.items():
                fake.add_user(user_id, name)
            fake.add_guild(500, "Guild", channels=[{"id": LOG, "name": "membot-log"}],
                           members=[{"id": uid} for uid in USERS])
            yield fake

    @pytest.fixture
    def settings(self, home: Path, model: ScriptedModel, fake: FakeDiscord) -> Settings:
        return make_settings(home, model, DISCORD_TOKEN="fake-token", DISCORD_MONOLOGUE_CHANNEL_ID=LOG,
                             MEMBOT_DISCORD_API_URL=fake.api_url, MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url)

    @pytest.fixture
    async def bot(self, fake: FakeDiscord, service: BotService, settings: Settings) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord(service, settings, stop, guild_ready_timeout=0.1))
        await fake.wait_connected()
        yield
        stop.set()
        await asyncio.wait_for(task, 20)

    @pytest.mark.parametrize("bare", [False, True], ids=["discord.py waits", "the queue waits"])
    async def test_replies_do_not_wait_for_a_rate_limited_monologue_channel(
        self, fake: FakeDiscord, bot: None, model: ScriptedModel, log_channel: LogChannel, bare: bool
    ) -> None:
        log_channel.limited, log_channel.bare = 2, bare  # 1 s twice before the first monologue post lands
        model.script(send("Reply 0", thought="thought 0"), send("Reply 1", thought="thought 1"))
        dm = FakeDiscord.dm_channel_id(ALICE)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fake.send_dm(ALICE, "message 0")
        await fake.wait_for_message(dm, predicate=lambda m: m["content"] == "Reply 0")
        # Before, the next message waited for this step's monologue post (2 s of 429s here).
        await fake.send_dm(ALICE, "message 1")
        await fake.wait_for_message(dm, predicate=lambda m: m["content"] == "Reply 1")
        assert loop.time() - started < 1.8
        assert fake.messages_in(LOG) == []  # the monologue is still waiting out its 429s
        await fake.wait_for_message(LOG, predicate=lambda m: "thought 1" in m["content"])
        posted = "\n".join(m["content"] for m in fake.messages_in(LOG))
        assert posted.index("thought 0") < posted.index("thought 1") and "**user0** (42)" in posted
        assert len(fake.messages_in(LOG)) <= 2  # step 1's lines joined whatever was waiting
        assert log_channel.attempts[-1] - started >= 2.0  # it did wait as told, and was not given up

    @pytest.mark.parametrize("status", [403, 404])
    async def test_a_refusing_monologue_channel_sends_the_monologue_to_the_log(
        self, fake: FakeDiscord, bot: None, model: ScriptedModel, log_channel: LogChannel,
        caplog: pytest.LogCaptureFixture, status: int,
    ) -> None:
        caplog.set_level(logging.INFO, "membot.adapters.discord.monologue")
        log_channel.refuse = status
        dm = FakeDiscord.dm_channel_id(ALICE)
        for i in range(3):
            model.script(send(f"Reply {i}", thought=f"thought {i}"))
            await fake.send_dm(ALICE, f"message {i}")
            await fake.wait_for_message(dm, predicate=lambda m, i=i: m["content"] == f"Reply {i}")
        await until(lambda: any("thought 2" in m for m in caplog.messages))
        assert all(any(f"thought {i}" in m for m in caplog.messages) for i in range(3))
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name == "membot.adapters.discord.monologue"]
        assert len(warnings) == 1 and "DISCORD_MONOLOGUE_CHANNEL_ID 502" in warnings[0]
        assert "Send Messages" in warnings[0]  # says what to do
        assert len(log_channel.attempts) == 1  # backing off: one refusal, not one per step
        assert fake.messages_in(LOG) == []

    async def test_twelve_users_at_once_are_answered_and_their_monologue_is_coalesced(
        self, fake: FakeDiscord, bot: None, model: ScriptedModel
    ) -> None:
        async def answer(body: dict[str, Any]) -> Any:
            who = json.loads(body["messages"][-1]["content"])["message"]
            return send(f"Hi {who}", thought=f"thinking about {who}")

        model.script(*[answer] * len(USERS))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(fake.send_dm(uid, f"from-{name}") for uid, name in USERS.items()))
        for uid, name in USERS.items():
            await fake.wait_for_message(FakeDiscord.dm_channel_id(uid), predicate=lambda m, n=name: n in m["content"])
        replies_took = loop.time() - started
        for name in USERS.values():
            await fake.wait_for_message(LOG, predicate=lambda m, n=name: f"thinking about from-{n}" in m["content"])
        posts = [m["content"] for m in fake.messages_in(LOG)]
        assert replies_took < 5.0 and all(units(p) <= 2000 for p in posts)
        assert len(posts) < len(USERS)  # coalesced: fewer posts than steps


# ----- Slack -----------------------------------------------------------------------------------------------


def slack_client(fake: FakeSlack) -> AsyncWebClient:
    """A client set up as the adapter's (SlackAdapter._client): the SDK waits out a 429 twice by itself."""
    retries = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=retries)


def clog_posts(fake: FakeSlack, status: int = 200) -> list[str]:
    return [str(c.params.get("text")) for c in fake.calls_to("chat.postMessage")
            if c.params.get("channel") == "CLOG" and c.status == status]


class TestSlack:
    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeSlack]:
        async with FakeSlack() as slack:
            slack.add_user("U1", "alice")
            slack.add_user("U2", "bob")
            yield slack

    @pytest.fixture
    def settings(self, home: Path, model: ScriptedModel, fake: FakeSlack) -> Settings:
        return make_settings(home, model, SLACK_BOT_TOKEN=fake.bot_token, SLACK_SIGNING_SECRET=fake.signing_secret,
                             SLACK_MONOLOGUE_CHANNEL="CLOG", MEMBOT_SLACK_API_URL=fake.api_url, MEMBOT_SLACK_PORT=0)

    @pytest.fixture
    async def bot(self, service: BotService, settings: Settings) -> AsyncIterator[str]:
        async with serving(service, settings) as url:
            yield url

    async def test_a_reply_does_not_wait_for_a_rate_limited_monologue_post(
        self, fake: FakeSlack, bot: str, model: ScriptedModel
    ) -> None:
        model.script(send("For alice", thought="alice-thought"), send("For bob", thought="bob-thought"))
        await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "hi")))
        await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
        # The next chat.postMessage is alice's monologue (her step is still closing): Slack says wait 2 s.
        fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=2)
        await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "CLOG")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fake.post_event(bot, fake.event_payload(fake.dm_event("U2", "hello")))
        reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D2")
        assert reply.params["text"] == "For bob" and loop.time() - started < 1.5
        assert clog_posts(fake) == []  # alice's monologue is still waiting out its 429
        await fake.wait_for_call("chat.postMessage", WAIT,
                                 lambda c: c.params["channel"] == "CLOG" and "bob-thought" in c.params["text"])
        posted = "\n".join(clog_posts(fake))
        assert posted.index("alice-thought") < posted.index("bob-thought")
        assert "[<@U1>]" in posted and "[<@U2>]" in posted

    async def test_a_429_past_the_sdks_retries_is_waited_out_not_taken_for_a_broken_channel(
        self, fake: FakeSlack, caplog: pytest.LogCaptureFixture
    ) -> None:
        poster = Poster("CLOG")
        fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1, times=3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await poster.log(slack_client(fake), "U1", ["💭 one", "⚡ two"])
        assert loop.time() - started < 0.1  # queued, not posted
        await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.status == 200)
        assert loop.time() - started >= 3.0  # two SDK retries, then ours
        assert clog_posts(fake) == ["[<@U1>] 💭 one\n[<@U1>] ⚡ two"]
        await poster.close()
        assert poster.monologue is not None
        counters = poster.monologue.counters
        assert (counters.produced, counters.delivered, counters.logged, counters.dropped) == (2, 2, 0, 0)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "monologue" in r.name]

    @pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived"])
    async def test_a_refusing_monologue_channel_sends_the_monologue_to_the_log(
        self, fake: FakeSlack, caplog: pytest.LogCaptureFixture, error: str
    ) -> None:
        caplog.set_level(logging.INFO, "membot.adapters.slack.monologue")
        poster, client = Poster("CLOG"), slack_client(fake)
        fake.fail_next("chat.postMessage", error)
        await poster.log(client, "U1", ["💭 first"])
        await until(lambda: "U1: 💭 first" in caplog.messages)
        await poster.log(client, "U2", ["💭 second"])  # backing off: straight to the log
        await until(lambda: "U2: 💭 second" in caplog.messages)
        await poster.close()
        assert len(fake.calls_to("chat.postMessage")) == 1
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name == "membot.adapters.slack.monologue"]
        assert len(warnings) == 1 and "SLACK_MONOLOGUE_CHANNEL CLOG" in warnings[0] and error in warnings[0]
        assert "/invite" in warnings[0]

    async def test_shutdown_posts_what_is_queued(self, fake: FakeSlack) -> None:
        poster, client = Poster("CLOG"), slack_client(fake)
        for i in range(5):
            await poster.log(client, "U1", [f"line {i}"])
        await poster.close()
        assert "\n".join(clog_posts(fake)).split("\n") == [f"[<@U1>] line {i}" for i in range(5)]
