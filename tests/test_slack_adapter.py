"""The Slack adapter end to end: a real bolt app served over HTTP, the real bot service and engine, FakeSlack
for Slack's side and the scripted model for the LLM. Plus unit tests of the pure rendering helpers."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from membot.adapters.slack.app import SlackAdapter, build_app
from membot.adapters.slack.commands import MEMORY_USAGE
from membot.adapters.slack.dedupe import Seen
from membot.adapters.slack.memory_files import refused as refusal
from membot.adapters.slack.render import (
    SECTION_LIMIT,
    escape,
    memory_blocks,
    parse_user_arg,
    plain_text,
    split_message,
    upload_summary,
)
from membot.adapters.slack.runner import http_runner, run_slack, socket_mode_handler
from membot.agent.agent import MemoryReport
from membot.agent.sources.loader import FileOutcome
from membot.agent.store.schema import utcnow
from membot.bot.access import not_open_text
from membot.bot.errors import ConfigurationError, QuotaReached
from membot.bot.identity import UserRef, find_agent
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.conftest import make_settings
from tests.fakes.openai_server import ChatReply, ScriptedModel, send, tool_call
from tests.fakes.scripted_replies import SCRIPTED_REASONING, reasoned
from tests.fakes.slack_fake import FakeSlack, RecordedCall

PAPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "memgpt_paper.pdf"
WAIT = 10.0
ALICE = UserRef("slack", "T1", "U1", "alice")
BOB = UserRef("slack", "T1", "U2", "bob")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        slack.add_user("U1", "alice")
        slack.add_user("U2", "bob")
        slack.add_user("UADMIN", "root")  # an admin by SLACK_ADMIN_IDS only
        slack.add_user("UBOSS", "boss", is_owner=True)  # an admin by Slack's own flags only
        yield slack


def slack_settings(home: Path, model: ScriptedModel, fake: FakeSlack, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": fake.signing_secret,
        "SLACK_MONOLOGUE_CHANNEL": "CLOG",
        "MEMBOT_SLACK_API_URL": fake.api_url,
        "SLACK_ADMIN_IDS": "UADMIN",
    }
    return make_settings(home, model, **{**values, **extra})


@pytest.fixture
def settings(home: Path, model: ScriptedModel, fake: FakeSlack) -> Settings:
    # Overrides conftest's: its `service` fixture then runs on these Slack settings.
    return slack_settings(home, model, fake, MEMBOT_SLACK_PORT=0)


@asynccontextmanager
async def serving(service: BotService, settings: Settings) -> AsyncIterator[str]:
    """The adapter served on a random loopback port; yields the events URL. After: the steps in flight and the
    queued monologue finish before the service closes under them."""
    adapter = SlackAdapter(service, settings, file_shared_grace=0.0)
    async with adapter.connections():  # as run_slack does
        service.outlets["slack"] = adapter.deliver_privately
        runner = await http_runner(adapter, settings, host="127.0.0.1")
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        finally:
            await runner.cleanup()
            await adapter.inflight.drain(5.0)
            await adapter.poster.close()
            service.outlets.pop("slack", None)


@pytest.fixture
async def bot(service: BotService, settings: Settings) -> AsyncIterator[str]:
    async with serving(service, settings) as url:
        yield url


def channel_message(fake: FakeSlack, user: str, text: str, channel: str, *, ts: str | None = None) -> dict[str, Any]:
    """A `message.channels` event: what Slack sends for every message in a channel the app reads."""
    ts = ts or fake.next_ts()
    return {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts,
            "channel_type": "channel", "team": fake.team_id}


def posts_to(fake: FakeSlack, channel: str) -> list[RecordedCall]:
    return [c for c in fake.calls_to("chat.postMessage") if c.params.get("channel") == channel]


def text_is(expected: str) -> Any:
    return lambda call: expected in str(call.params.get("text", ""))


def last_user_content(model: ScriptedModel) -> str:
    return str([m for m in model.requests[-1]["messages"] if m["role"] == "user"][-1]["content"])


async def command(fake: FakeSlack, url: str, name: str, text: str, user_id: str) -> dict[str, Any]:
    """Run a slash command; returns the private answer it posted to its response_url."""
    since = len(fake.response_url_posts)
    status, body, elapsed = await fake.post_command(url, fake.command_body(name, text, user_id=user_id))
    assert status == 200 and body == "" and elapsed < 3
    return await fake.wait_for_response_url_post(timeout=WAIT, since=since)


# ---------------------------------------------------------------------------- conversation


async def test_dm_is_answered_and_monologue_goes_only_to_the_log_channel(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(send("Hello alice! <!channel> & co", thought="She said hi; greet back warmly."))
    status, _, _ = await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "hi there")))
    assert status == 200

    reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
    # Escaped: the agent can never ping a whole channel.
    assert reply.params["text"] == "Hello alice! &lt;!channel&gt; &amp; co"
    assert reply.params.get("thread_ts") is None
    assert "hi there" in last_user_content(model)

    log = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "CLOG")
    assert "greet back warmly" in log.params["text"] and "[<@U1>] [DM]" in log.params["text"]
    assert "send_message" in log.params["text"]
    assert not any("greet back" in c.params["text"] for c in posts_to(fake, "D1"))
    assert len(model.requests) == 1


async def test_a_model_that_thinks_in_its_calls_and_calls_twice_is_answered_and_its_thoughts_logged(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(ChatReply(None, tool_call(
        "core_memory_append", {"inner_thoughts": "SECRET keep the plant", "name": "human", "content": "Plant: fern."},
        extra_calls=[("send_message", {"inner_thoughts": "SECRET now reply", "message": "A fern, lovely."})],
    ).tool_calls))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "I have a fern")))
    reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
    assert reply.params["text"] == "A fern, lovely."
    await fake.wait_for_call("chat.postMessage", WAIT,
                             lambda c: c.params["channel"] == "CLOG" and "now reply" in c.params["text"])
    logged = " ".join(c.params["text"] for c in posts_to(fake, "CLOG"))
    assert "keep the plant" in logged
    assert not any("SECRET" in c.params["text"] for c in posts_to(fake, "D1"))


async def test_a_reasoning_models_think_block_goes_to_the_log_channel_never_the_dm(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(reasoned(send("Hello there."), how="think"))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "hi")))
    reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
    assert reply.params["text"] == "Hello there."
    await fake.wait_for_call("chat.postMessage", WAIT,
                             lambda c: c.params["channel"] == "CLOG" and "REASONING-TRACE" in c.params["text"])
    assert not any("REASONING-TRACE" in c.params["text"] for c in posts_to(fake, "D1"))
    assert SCRIPTED_REASONING.startswith("REASONING-TRACE")


@pytest.mark.parametrize("habits", [{"text_only"}, {"no_tools", "reasoning_content"}])
async def test_a_stubborn_or_toolless_model_still_answers_in_the_im(
    fake: FakeSlack, bot: str, model: ScriptedModel, habits: set[str]
) -> None:
    model.habits = habits
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Cat: Miso.", "request_heartbeat": True},
                           "Worth keeping: the cat."), send("Miso, noted.", thought="Answer her."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "my cat is Miso")))
    reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
    assert reply.params["text"] == "Miso, noted."
    await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "CLOG")
    assert not any(SCRIPTED_REASONING in c.params["text"] or "Worth keeping" in c.params["text"]
                   for c in posts_to(fake, "D1"))


async def test_a_reply_that_meets_more_rate_limits_than_the_client_retries_still_arrives(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(send("Patience pays."))
    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=0, times=4)  # the client retries 2
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "hello")))
    reply = await fake.wait_for_call("chat.postMessage", 20, lambda c: c.params["channel"] == "D1"
                                     and c.response.get("ok"))
    assert reply.params["text"] == "Patience pays."


async def test_a_reminder_reaches_the_users_im_when_due_and_a_serve_of_discord_does_not_take_it(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    model.script(tool_call("schedule_wakeup", {"when": "in 2 hours", "note": "water the fern",
                                               "request_heartbeat": True}), send("Noted."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "remind me in 2 hours to water the fern")))
    await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params.get("text") == "Noted.")
    later = utcnow() + timedelta(hours=2, minutes=1)
    assert await Scheduler(service, service.deliver_wakeup, platforms={"discord"}).tick(later) == 0
    model.script(send("Time to water the fern."))
    assert await Scheduler(service, service.deliver_wakeup, platforms={"slack"}).tick(later) == 1
    reminder = await fake.wait_for_call("chat.postMessage", WAIT,
                                        lambda c: c.params.get("text") == "Time to water the fern.")
    assert reminder.params["channel"].startswith("D")


async def test_reminders_command_lists_and_cancels_privately(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    model.script(tool_call("schedule_wakeup", {"when": "in 3 hours", "note": "call the bank",
                                               "request_heartbeat": True}), send("Sure."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "remind me in 3 hours to call the bank")))
    await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params.get("text") == "Sure.")
    listed = await command(fake, bot, "/reminders", "", "U1")
    assert listed["response_type"] == "ephemeral" and "call the bank" in listed["text"]
    number = listed["text"].split()[0]
    cancelled = await command(fake, bot, "/reminders", f"cancel {number}", "U1")
    assert cancelled["text"].startswith(f"Cancelled reminder {number}")
    assert (await command(fake, bot, "/reminders", "", "U1"))["text"] == "No pending reminders."


async def test_heartbeats_command_switches_and_shows_them_privately(
    fake: FakeSlack, home: Path, model: ScriptedModel
) -> None:
    settings = slack_settings(home, model, fake, MEMBOT_SLACK_PORT=0, MEMBOT_HEARTBEAT_MINUTES=30)
    service = await BotService.open(settings)
    try:
        async with serving(service, settings) as url:
            off = await command(fake, url, "/heartbeats", "off", "U1")
            assert off["response_type"] == "ephemeral"
            assert off["text"].startswith("Timed heartbeats are off for your agent")
            assert "/heartbeats on" in (await command(fake, url, "/heartbeats", "", "U1"))["text"]
            on = await command(fake, url, "/heartbeats", "on", "U1")
            assert "Timed heartbeats are on" in on["text"] and "The next is due" in on["text"]
            wrong = await command(fake, url, "/heartbeats", "maybe", "U1")
            assert "does not know" in wrong["text"] and "try again" not in wrong["text"]
    finally:
        await service.close()


async def test_a_message_that_cannot_be_answered_gets_a_reason_not_silence(
    fake: FakeSlack, home: Path, model: ScriptedModel
) -> None:
    # A misconfigured default persona: the first contact cannot create the user's agent.
    settings = slack_settings(home, model, fake, MEMBOT_SLACK_PORT=0, MEMBOT_PERSONA="no_such_persona")
    service = await BotService.open(settings)
    adapter = SlackAdapter(service, settings, file_shared_grace=0.0)
    runner = await http_runner(adapter, settings, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        status, _, _ = await fake.post_event(url, fake.event_payload(fake.dm_event("U1", "hello?")))
        assert status == 200
        reply = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
        assert "no_such_persona" in reply.params["text"]
    finally:
        await runner.cleanup()
        await adapter.inflight.drain(5.0)
        await service.close()
    assert model.requests == []


async def test_mention_is_answered_in_its_thread(fake: FakeSlack, bot: str, model: ScriptedModel) -> None:
    model.script(send("Top-level answer."), send("Threaded answer."))
    top = fake.mention_event("U1", "what do you remember?", channel="C1")
    await fake.post_event(bot, fake.event_payload(top))
    first = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Top-level answer."))
    assert first.params["channel"] == "C1" and first.params["thread_ts"] == top["ts"]
    assert "<@UBOT>" not in last_user_content(model) and "what do you remember?" in last_user_content(model)

    root = fake.next_ts()
    inner = fake.mention_event("U1", "and now?", channel="C1", thread_ts=root)
    await fake.post_event(bot, fake.event_payload(inner))
    second = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Threaded answer."))
    assert second.params["thread_ts"] == root


async def test_a_slow_reply_streams_into_one_message_updated_to_the_exact_text(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    text = "Streaming works." + " Every word arrives a little later than the one before it." * 8
    model.stream_delay = 0.02  # about 3 s for the whole call
    model.script(send(text))
    await fake.post_event(bot, fake.event_payload(fake.mention_event("U1", "talk slowly", channel="C1")))
    first = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "C1")
    assert model.pending == 0 and first.params["text"] != text and first.params["thread_ts"]
    await fake.wait_for_call("chat.update", WAIT, lambda c: c.params.get("text") == text)
    assert len(posts_to(fake, "C1")) == 1  # one message, updated in place, in the mention's thread
    assert fake.messages[("C1", first.response["ts"])]["text"] == text and not fake.rate_limited_calls


async def test_what_is_said_in_a_dm_never_reaches_a_channel(fake: FakeSlack, bot: str, model: ScriptedModel) -> None:
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Salary: 91234",
                                                  "request_heartbeat": True}), send("Kept private."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "my salary is 91234")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Kept private."))
    since = len(model.requests)
    model.script(tool_call("conversation_search", {"query": "salary", "request_heartbeat": True}),
                 send("Not here."))
    await fake.post_event(bot, fake.event_payload(fake.mention_event("U1", "what is my salary?", channel="C1")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Not here."))
    public = str(model.requests[since:])
    assert "91234" not in public and "<#C1>" in public
    await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "CLOG"
                             and "[<@U1>] [<#C1>]" in c.params["text"])
    model.script(tool_call("conversation_search", {"query": "salary", "request_heartbeat": True}), send("It is 91234."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "what is my salary?")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("It is 91234."))
    assert "my salary is 91234" in str(model.requests[-1])


async def test_a_thread_started_with_a_mention_goes_on_without_one(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(send("In a thread now."), send("Still here."))
    top = fake.mention_event("U1", "let's talk", channel="C1")
    await fake.post_event(bot, fake.event_payload(top))
    first = await fake.wait_for_call("chat.postMessage", WAIT, text_is("In a thread now."))
    assert first.params["thread_ts"] == top["ts"]
    # Bob in the same thread, and Alice outside it, without a mention: not for the bot.
    for user, thread in (("U2", top["ts"]), ("U1", None)):
        message = channel_message(fake, user, "chatting among ourselves", "C1")
        await fake.post_event(bot, fake.event_payload({**message, "thread_ts": thread} if thread else message))
    follow_up = {**channel_message(fake, "U1", "and one more thing", "C1"), "thread_ts": top["ts"]}
    await fake.post_event(bot, fake.event_payload(follow_up))
    second = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Still here."))
    assert second.params["thread_ts"] == top["ts"] and len(model.requests) == 2
    assert "and one more thing" in last_user_content(model) and "in a thread" in last_user_content(model)


async def test_retried_event_is_handled_once(
    fake: FakeSlack, bot: str, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="membot.adapters.slack")
    model.script(send("Once."), send("Second message."))
    payload = fake.event_payload(fake.dm_event("U1", "hello"), event_id="EvRETRY1")
    assert (await fake.post_event(bot, payload))[0] == 200
    assert (await fake.post_event(bot, payload, retry_num=1))[0] == 200
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Once."))
    # A later message is answered normally; the retry never reached the model.
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "second")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Second message."))
    assert len(model.requests) == 2
    assert [c.params["text"] for c in posts_to(fake, "D1")] == ["Once.", "Second message."]
    # Dropped by event_id before any listener ran.
    assert "dropped redelivered Slack event EvRETRY1" in caplog.text


async def test_ack_comes_before_the_model_answers(fake: FakeSlack, bot: str, model: ScriptedModel) -> None:
    # Warm up bolt's lazy auth.test so the timing measures the ack alone.
    model.script(send("warm"), send("Slow but here."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "warm up")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("warm"))

    model.latency = 1.0
    status, _, elapsed = await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "take your time")))
    assert status == 200 and elapsed < 0.5
    assert not any("Slow but here." in c.params["text"] for c in posts_to(fake, "D1"))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Slow but here."))


async def test_bots_edits_and_unaddressed_channel_messages_are_ignored(
    fake: FakeSlack, bot: str, model: ScriptedModel
) -> None:
    model.script(send("Only this."))
    other_bot = fake.dm_event("U1", "I am a bot")
    other_bot["bot_id"] = "B999"
    edited = fake.dm_event("U1", "edited")
    edited["subtype"] = "message_changed"
    channel_chat = fake.dm_event("U1", "just chatting", channel="C1")
    channel_chat["channel_type"] = "channel"
    for event in (other_bot, edited, channel_chat):
        assert (await fake.post_event(bot, fake.event_payload(event)))[0] == 200
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "real message")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Only this."))
    assert len(model.requests) == 1 and "real message" in last_user_content(model)


async def test_wrong_signature_is_refused_and_run_slack_serves_until_stopped(
    fake: FakeSlack, service: BotService, home: Path, model: ScriptedModel
) -> None:
    with socket.socket() as probe:  # a free port for run_slack's own listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = slack_settings(home, model, fake, MEMBOT_SLACK_PORT=port)
    stop = asyncio.Event()
    task = asyncio.create_task(run_slack(service, settings, stop))
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        for _ in range(100):  # until the listener is up
            try:
                status, _, _ = await fake.post_event(
                    url, fake.event_payload(fake.dm_event("U1", "forged")), sign_with="wrong-secret"
                )
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert status == 401
        model.script(send("Served by run_slack."))
        await fake.post_event(url, fake.event_payload(fake.dm_event("U1", "genuine")))
        await fake.wait_for_call("chat.postMessage", WAIT, text_is("Served by run_slack."))
        assert len(model.requests) == 1 and "genuine" in last_user_content(model)
        # Web API calls reuse their connections rather than open one each (a TLS handshake each, on slack.com).
        calls = [c for c in fake.calls if c.method != "apps.connections.open"]
        assert len(calls) >= 3 and len({c.peer for c in calls}) < len(calls)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


async def test_a_wrong_bot_token_stops_run_slack_with_a_clear_reason(
    fake: FakeSlack, service: BotService, home: Path, model: ScriptedModel
) -> None:
    settings = slack_settings(home, model, fake, SLACK_BOT_TOKEN="xoxb-revoked")
    with pytest.raises(ConfigurationError, match="SLACK_BOT_TOKEN .invalid_auth."):
        await asyncio.wait_for(run_slack(service, settings, asyncio.Event()), WAIT)
    gone = slack_settings(home, model, fake, MEMBOT_SLACK_API_URL="http://127.0.0.1:9/api/")
    with pytest.raises(ConnectionError, match="Could not reach Slack"):
        await asyncio.wait_for(run_slack(service, gone, asyncio.Event()), WAIT)


async def test_socket_mode_handler_is_built_on_the_app(
    home: Path, model: ScriptedModel, fake: FakeSlack
) -> None:
    settings = slack_settings(home, model, fake, SLACK_APP_TOKEN="xapp-test")
    adapter = SlackAdapter(cast(BotService, object()), settings)  # never called: nothing connects
    handler = socket_mode_handler(adapter, settings)
    try:
        assert isinstance(handler, AsyncSocketModeHandler)
        assert handler.app is adapter.app and handler.app_token == "xapp-test"
        assert handler.client.web_client.base_url == fake.api_url
    finally:
        await handler.close_async()  # its client opened an aiohttp session already
    assert build_app(cast(BotService, object()), settings).client.base_url == fake.api_url


# ---------------------------------------------------------------------------- uploads


@pytest.mark.skipif(not PAPER.exists(), reason="shared/data/memgpt_paper.pdf not present")
async def test_pdf_upload_is_loaded_attached_and_confirmed_once(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    hosted = fake.host_file(PAPER.name, PAPER.read_bytes(), "application/pdf", user="U1", channels=["D1"])
    model.script(send("Thanks, I'll read the paper."), send("Still here."))
    event = fake.dm_event("U1", "", files=[hosted])
    await fake.post_event(bot, fake.event_payload(event))

    done = await fake.wait_for_call("chat.postMessage", 30, text_is("Loaded memgpt_paper.pdf"))
    assert done.params["channel"] == "D1" and done.params["thread_ts"] == event["ts"]
    assert "13 pages" in done.params["text"] and "attached to your agent" in done.params["text"]
    report = await service.memory(ALICE)
    assert report.sources == ["memgpt_paper.pdf"]
    reaction = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Thanks, I'll read the paper."))
    assert reaction.params["thread_ts"] == event["ts"]
    assert [d.authorized for d in fake.file_downloads] == [True]

    # The same upload announced again as `file_shared` is not loaded twice.
    shared = fake.file_shared_event(hosted, "U1", "D1")
    await fake.post_event(bot, fake.event_payload(shared))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "ping")))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("Still here."))
    assert len(fake.file_downloads) == 1 and fake.calls_to("files.info") == []


async def test_bad_big_and_unsupported_files_get_a_reason_and_change_nothing(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    broken = fake.host_file(
        "report.pdf", b"this is not a pdf at all", "application/pdf", user="U1", channels=["D1"]
    )
    event = fake.dm_event("U1", "", files=[broken])
    await fake.post_event(bot, fake.event_payload(event))
    answer = await fake.wait_for_call("chat.postMessage", WAIT, text_is("report.pdf: not a PDF"))
    assert answer.params["thread_ts"] == event["ts"] and "Nothing was loaded" in answer.params["text"]

    huge = fake.host_file("huge.txt", b"small really", "text/plain", user="U1", channels=["D1"])
    huge["size"] = 400 * 1024 * 1024  # what Slack reports is checked before downloading
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "", files=[huge])))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("uploads are limited to 50 MB"))

    image = fake.host_file("cat.png", b"\x89PNG\r\n\x1a\n", "image/png", user="U1", channels=["D1"])
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "", files=[image])))
    await fake.wait_for_call("chat.postMessage", WAIT, text_is("cat.png: I can only load"))

    assert [d.file_id for d in fake.file_downloads] == [broken["id"]]
    assert await service.sources(ALICE) == [] and model.requests == []


async def test_file_shared_event_alone_loads_the_file(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    hosted = fake.host_file(
        "notes.md", b"# Notes\n\nThe launch is on Friday.", "text/markdown", user="U2", channels=["C1"]
    )
    model.script(send("Got your notes."))
    shared = fake.file_shared_event(hosted, "U2", "C1")
    await fake.post_event(bot, fake.event_payload(shared))
    done = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Loaded notes.md: 1 passage,"))
    assert done.params["channel"] == "C1"
    assert [s.name for s in await service.sources(BOB)] == ["notes.md"]
    assert (await service.memory(BOB)).sources == ["notes.md"]


# ---------------------------------------------------------------------------- slash commands


async def test_memory_needs_an_admin_for_someone_else(fake: FakeSlack, bot: str, service: BotService) -> None:
    await service.agent_id(BOB)

    refused = await command(fake, bot, "/memory", "<@U2|bob>", "U1")
    assert refused["response_type"] == "ephemeral" and refused["text"] == refusal("see")
    assert "blocks" not in refused or not refused["blocks"]

    # A workspace owner runs the workspace, not the bot: refused like anyone else.
    assert (await command(fake, bot, "/memory", "<@U2|bob>", "UBOSS"))["text"] == refusal("see")
    for admin in ("UADMIN",):  # SLACK_ADMIN_IDS: the bot's operators
        shown = await command(fake, bot, "/memory", "<@U2|bob>", admin)
        assert shown["response_type"] == "ephemeral"
        assert shown["blocks"][0] == {
            "type": "header",
            "text": {"type": "plain_text", "text": "Memory of bob", "emoji": True},
        }
        body = str(shown["blocks"])
        assert "*persona*" in body and "*human*" in body and "Recall memory" in body

    own = await command(fake, bot, "/memory", "", "U1")
    assert own["blocks"][0]["text"]["text"] == "Memory of alice"
    assert (await command(fake, bot, "/memory", "tell me everything", "U1"))["text"] == escape(MEMORY_USAGE)
    assert "no agent yet" in (await command(fake, bot, "/memory", "<@U9|nobody>", "UADMIN"))["text"]


async def test_attach_detach_and_persona_commands(
    fake: FakeSlack, bot: str, model: ScriptedModel, service: BotService
) -> None:
    usage = await command(fake, bot, "/attach", "", "U1")
    assert usage["response_type"] == "ephemeral" and "Usage: /attach" in usage["text"]
    assert "no source called" in (await command(fake, bot, "/attach", "nothing-here", "U1"))["text"]

    model.script(send("Alice: I can read the notes now."))
    await service.load_file(BOB, "notes.txt", b"The launch is on Friday.")  # Bob's agent's reaction unrun
    attached = await command(fake, bot, "/attach", "notes.txt", "U1")
    assert attached["text"].startswith("Attached notes.txt")
    reply = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Alice: I can read the notes now."))
    assert reply.params["channel"] == "D1"  # the agent's reaction goes to the DM (conversations.open)
    assert fake.calls_to("conversations.open")

    assert "Usage: /detach" in (await command(fake, bot, "/detach", "", "U1"))["text"]
    assert "no source called" in (await command(fake, bot, "/detach", "nothing-here", "U1"))["text"]
    assert (await command(fake, bot, "/detach", "notes.txt", "U1"))["text"].startswith("Detached notes.txt")
    assert (await service.memory(ALICE)).sources == []
    assert (await command(fake, bot, "/detach", "notes.txt", "U1"))["text"] == "notes.txt was not attached."
    # Someone who never talked to the bot gets an answer, and no agent made for it.
    assert (await command(fake, bot, "/detach", "notes.txt", "UBOSS"))["text"] == "notes.txt was not attached."
    assert await find_agent(service.engine.db, UserRef("slack", "T1", "UBOSS", "boss")) is None

    assert "sam_pov" in (await command(fake, bot, "/persona", "", "U1"))["text"]
    assert (await command(fake, bot, "/persona", "memgpt_doc", "U1"))["text"] == "Persona set to memgpt_doc."
    assert (await service.memory(ALICE)).persona_name == "memgpt_doc"
    assert "nope" in (await command(fake, bot, "/persona", "nope", "U1"))["text"]


# ---------------------------------------------------------------------------- operator controls


async def test_allow_lists_and_open_channels(
    fake: FakeSlack, service: BotService, home: Path, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="membot.adapters.slack")
    settings = slack_settings(home, model, fake, MEMBOT_SLACK_PORT=0, MEMBOT_ALLOW_USERS="U1",
                              MEMBOT_OPEN_CHANNELS="COPEN")
    async with serving(service, settings) as url:
        # Not listed: a DM gets one short answer (though it came as both `message` and `app_mention`)...
        refused = fake.dm_event("U2", "<@UBOT> hello")
        mention = fake.mention_event("U2", "hello", channel="D2", ts=refused["ts"])
        await fake.post_event(url, fake.event_payload(refused))
        await fake.post_event(url, fake.event_payload(mention))
        answer = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D2")
        assert answer.params["text"] == escape(not_open_text("slack"))
        # ...a mention in a channel, or a message in an open one, nothing at all.
        await fake.post_event(url, fake.event_payload(fake.mention_event("U2", "hello", channel="C1")))
        await fake.post_event(url, fake.event_payload(channel_message(fake, "U2", "hello all", "COPEN")))

        # Listed, or an admin: answered.
        model.script(send("Hi admin."), send("Open answer."), send("Answered once."))
        await fake.post_event(url, fake.event_payload(fake.dm_event("UADMIN", "hi")))
        await fake.wait_for_call("chat.postMessage", WAIT, text_is("Hi admin."))
        # In the open channel any message is for the bot; the answer goes where the message was.
        await fake.post_event(url, fake.event_payload(channel_message(fake, "U1", "no mention", "COPEN")))
        open_answer = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Open answer."))
        assert open_answer.params["channel"] == "COPEN" and open_answer.params.get("thread_ts") is None
        # A mention there comes as `message` and `app_mention`: answered once, in the same place.
        said = channel_message(fake, "U1", "<@UBOT> and you?", "COPEN")
        await fake.post_event(url, fake.event_payload(fake.mention_event("U1", "and you?", channel="COPEN",
                                                                         ts=said["ts"])))
        await fake.post_event(url, fake.event_payload(said))
        once = await fake.wait_for_call("chat.postMessage", WAIT, text_is("Answered once."))
        assert once.params.get("thread_ts") is None
        # Elsewhere plain channel messages are still not for the bot.
        await fake.post_event(url, fake.event_payload(channel_message(fake, "U1", "just chatting", "C1")))
        assert (await command(fake, url, "/persona", "memgpt_doc", "U2"))["text"] == escape(not_open_text("slack"))
        assert (await command(fake, url, "/persona", "memgpt_doc", "U1"))["text"] == "Persona set to memgpt_doc."
    assert len(model.requests) == 3
    assert [len(posts_to(fake, c)) for c in ("D2", "C1", "COPEN")] == [1, 0, 2]
    assert "not on the allow-lists" in caplog.text
    assert await find_agent(service.engine.db, BOB) is None  # nothing was made for the refused user


async def test_the_workspace_list_applies_to_commands_and_dms_too(
    fake: FakeSlack, service: BotService, home: Path, model: ScriptedModel
) -> None:
    settings = slack_settings(home, model, fake, MEMBOT_SLACK_PORT=0, MEMBOT_ALLOW_GUILDS="T9",
                              MEMBOT_ALLOW_CHANNELS="C9")
    async with serving(service, settings) as url:
        since = len(fake.response_url_posts)
        await fake.post_command(url, fake.command_body("/memory", "", user_id="U1", channel_id="D1"))
        refusal = await fake.wait_for_response_url_post(timeout=WAIT, since=since)
        assert refusal["response_type"] == "ephemeral" and refusal["text"] == escape(not_open_text("slack"))
        await fake.post_event(url, fake.event_payload(fake.dm_event("U1", "hi")))
        answer = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
        assert answer.params["text"] == escape(not_open_text("slack"))
        # An admin is admitted anywhere.
        assert (await command(fake, url, "/persona", "memgpt_doc", "UADMIN"))["text"] == "Persona set to memgpt_doc."
    assert model.requests == []


async def test_cancel_command_answers_privately_with_the_services_words(
    fake: FakeSlack, bot: str, service: BotService, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[UserRef] = []

    async def cancel(user: UserRef) -> str:
        asked.append(user)
        return "Nothing is running for you right now."

    monkeypatch.setattr(service, "cancel", cancel)
    answer = await command(fake, bot, "/cancel", "", "U1")
    assert answer["response_type"] == "ephemeral" and answer["text"] == "Nothing is running for you right now."
    assert [u.key for u in asked] == [ALICE.key]


QUOTA = "You have used today's 1,000 tokens; more at 00:00 UTC."


async def test_a_reached_quota_is_told_privately(
    fake: FakeSlack, bot: str, service: BotService, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def chat(user: UserRef, text: str, place: Any = None) -> AsyncIterator[Any]:
        raise QuotaReached(QUOTA)
        yield  # an async generator, as the service's own

    monkeypatch.setattr(service, "chat", chat)
    # In the IM, a plain message.
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "hi")))
    told = await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")
    assert told.params["text"] == escape(QUOTA)
    # In a channel, an ephemeral message to the user alone, in the mention's thread.
    mention = fake.mention_event("U2", "hello", channel="C1")
    await fake.post_event(bot, fake.event_payload(mention))
    ephemeral = await fake.wait_for_call("chat.postEphemeral", WAIT)
    assert ephemeral.params["channel"] == "C1" and ephemeral.params["user"] == "U2"
    assert ephemeral.params["text"] == escape(QUOTA) and ephemeral.params["thread_ts"] == mention["ts"]
    assert posts_to(fake, "C1") == [] and model.requests == []


# ---------------------------------------------------------------------------- pure helpers


def test_split_message_prefers_paragraphs_then_lines() -> None:
    assert split_message("") == [] and split_message("  short  ") == ["short"]
    paragraphs = "\n\n".join(["a" * 60] * 5)
    pieces = split_message(paragraphs, limit=130)
    assert pieces == ["a" * 60 + "\n\n" + "a" * 60] * 2 + ["a" * 60]
    assert split_message("c" * 50 + "\n" + "d" * 10, limit=50) == ["c" * 50, "d" * 10]  # break just past it
    lines = "\n".join(["b" * 30] * 4)
    assert split_message(lines, limit=70) == ["b" * 30 + "\n" + "b" * 30] * 2


def test_split_message_bounds_and_keeps_every_word() -> None:
    text = " ".join(f"word{i}" for i in range(3000)) + "\n\n" + "x" * 9000
    pieces = split_message(text)
    assert all(0 < len(p) <= 3900 for p in pieces) and len(pieces) > 4
    assert " ".join(pieces).split() == text.split()[:-1] + ["x" * 3900, "x" * 3900, "x" * 1200]


def test_split_never_cuts_an_entity() -> None:
    text = escape("<" * 50)  # "&lt;" * 50: no spaces to split on
    for piece in split_message(text, limit=42):
        assert len(piece) <= 42 and piece.replace("&lt;", "") == ""


def test_plain_text_and_user_arguments() -> None:
    raw = "<@UBOT> hi <@U2|bob>, see <#C1|general> &amp; <https://x.io|the site> or <https://y.io> &lt;3"
    assert plain_text(raw, "UBOT") == "hi @bob, see #general & the site (https://x.io) or https://y.io <3"
    assert plain_text("<!here> <mailto:a@b.c|a@b.c>") == "@here a@b.c"
    assert parse_user_arg("<@U2|bob>") == ("U2", "bob")
    assert parse_user_arg(" <@W123> ") == ("W123", "")
    assert parse_user_arg("U0ABC") == ("U0ABC", "")
    assert parse_user_arg("@bob") is None and parse_user_arg("<@U2> <@U3>") is None


def _report(**overrides: Any) -> MemoryReport:
    values: dict[str, Any] = dict(
        agent_id=1,
        name="slack:alice",
        persona_name="sam_pov",
        blocks={"persona": ("I am Sam <3", 2000), "human": ("", 2000)},
        recall_messages=12,
        archival_passages=3,
        sources=["memgpt_paper.pdf"],
        context_messages=7,
        context_tokens=4000,
        context_window=16000,
        summary="",
        summary_hidden=0,
    )
    values.update(overrides)
    return MemoryReport(**values)


def test_memory_blocks_layout_and_limits() -> None:
    blocks = memory_blocks(_report(), "alice")
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["text"] == "Memory of alice"
    sections = [b for b in blocks if b["type"] == "section" and "text" in b]
    assert [s["text"]["text"].split("*")[1] for s in sections] == ["persona", "human"]
    assert "I am Sam &lt;3" in sections[0]["text"]["text"] and "_(empty)_" in sections[1]["text"]["text"]
    fields = " ".join(f["text"] for b in blocks for f in b.get("fields", []))
    assert "12 messages" in fields and "3 passages" in fields and "memgpt_paper.pdf" in fields
    assert "4,000 of 16,000 tokens (25%)" in fields

    long = memory_blocks(
        _report(blocks={"persona": ("&" * 5000, 9000)}, summary="s" * 4000, summary_hidden=40), "x" * 300
    )
    assert len(long[0]["text"]["text"]) <= 150
    texts = [b["text"]["text"] for b in long if b["type"] == "section" and "text" in b]
    assert all(len(t) <= SECTION_LIMIT for t in texts) and "40 earlier messages" in texts[-1]
    assert texts[0].rstrip("…").endswith("&amp;")  # clipped between entities, never inside one


async def test_upload_summary_and_seen() -> None:
    loaded = FileOutcome("p.pdf", "loaded", documents=13, pages=13, passages=57)
    assert (
        upload_summary(loaded, "p.pdf") == "Loaded p.pdf: 57 passages from 13 pages, attached to your agent."
    )
    failed = FileOutcome("p.pdf", "failed", reason="p.pdf: not a PDF")
    assert upload_summary(failed, "p.pdf") == "p.pdf: not a PDF. Nothing was loaded."
    seen = Seen(capacity=2)
    assert await seen.claim("a") and not await seen.claim("a") and await seen.claim("b") and await seen.claim("c")
    assert "a" not in seen and len(seen) == 2
