"""Self-test for tests/fakes/slack_fake.py: a real slack-bolt AsyncApp (HTTP mode) against FakeSlack.

If these pass, other tests can trust that what bolt does against the fake is what it would do
against Slack: signed requests in, Web API calls / response_url posts / file downloads out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from tests.fakes.slack_fake import FakeSlack

# Every wait in this module is bounded well below pytest's patience: a broken wiring should fail
# in seconds, not hang the suite.
WAIT = 5.0


@dataclass
class Bolt:
    app: AsyncApp
    url: str  # where the fake should POST events/commands


@pytest.fixture(autouse=True)
def outbound_hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record the host of every aiohttp client request made during a test.

    slack_sdk's async clients (Web API, response_url webhooks) and our downloads all go through
    aiohttp.ClientSession._request, so this proves nothing leaves for slack.com.
    """
    hosts: list[str] = []
    original = aiohttp.ClientSession._request

    async def recording(
        self: aiohttp.ClientSession, method: str, str_or_url: Any, *args: Any, **kwargs: Any
    ) -> Any:
        hosts.append(str(URL(str(str_or_url)).host))
        return await original(self, method, str_or_url, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    yield hosts
    assert set(hosts) <= {"127.0.0.1"}, f"request left the machine: {hosts}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        slack.add_user("U1", "alice")
        slack.add_user("UADMIN", "root", is_admin=True)
        yield slack


async def _serve(app: AsyncApp) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/slack/events"


@pytest.fixture
async def bolt(fake: FakeSlack) -> AsyncIterator[Bolt]:
    # Pass only `client`: bolt takes the token from it (passing token= as well just logs a
    # "client prioritized, token skipped" warning). Bolt copies base_url into the per-request
    # client it gives listeners, so this one setting redirects every Web API call to the fake.
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    app = AsyncApp(signing_secret=fake.signing_secret, client=client)
    runner, url = await _serve(app)
    try:
        yield Bolt(app=app, url=url)
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- (1) DM -> say()


async def test_dm_event_reaches_handler_and_say_posts_to_dm(
    fake: FakeSlack, bolt: Bolt, outbound_hosts: list[str]
) -> None:
    seen: list[dict[str, Any]] = []

    @bolt.app.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say("hi")

    status, _, _ = await fake.post_event(bolt.url, fake.event_payload(fake.dm_event("U1", "hello")))
    assert status == 200

    call = await fake.wait_for_call("chat.postMessage", timeout=WAIT)
    assert call.params["channel"] == "D1"
    assert call.params["text"] == "hi"
    assert call.token == fake.bot_token
    assert call.content_type == "application/json"  # slack_sdk sends chat.postMessage as JSON
    assert call.response["ok"] and call.response["channel"] == "D1"
    assert seen[0]["channel_type"] == "im" and seen[0]["user"] == "U1"

    # auth.test is lazy: first request triggers it (before the listener), later ones reuse it.
    assert fake.calls[0].method == "auth.test"
    before = len(fake.calls)
    await fake.post_event(bolt.url, fake.event_payload(fake.dm_event("U1", "again")))
    await fake.wait_for_call("chat.postMessage", timeout=WAIT, since=before)
    assert len(fake.calls_to("auth.test")) == 1

    assert outbound_hosts and set(outbound_hosts) == {"127.0.0.1"}


# ---------------------------------------------------------------------------- (2) mention in thread


async def test_app_mention_in_thread_replies_in_thread(fake: FakeSlack, bolt: Bolt) -> None:
    @bolt.app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        # say() does not thread by itself; the handler must pass thread_ts.
        await say("threaded reply", thread_ts=event.get("thread_ts") or event["ts"])

    root = fake.next_ts()
    event = fake.mention_event("U1", "what do you remember?", channel="C1", thread_ts=root)
    assert event["text"].startswith("<@UBOT>")
    status, _, _ = await fake.post_event(bolt.url, fake.event_payload(event))
    assert status == 200

    call = await fake.wait_for_call("chat.postMessage", timeout=WAIT)
    assert call.params["channel"] == "C1"
    assert call.params["thread_ts"] == root
    assert call.response["message"]["thread_ts"] == root
    assert call.response["ts"] > event["ts"]  # fake ts values keep increasing


# ---------------------------------------------------------------------------- (3) signatures


async def test_bad_or_stale_signature_is_rejected_before_listeners(fake: FakeSlack, bolt: Bolt) -> None:
    ran: list[str] = []

    @bolt.app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        ran.append(event["text"])

    wrong = await fake.post_event(bolt.url, fake.event_payload(fake.dm_event("U1", "a")), sign_with="nope")
    stale = await fake.post_event(
        bolt.url, fake.event_payload(fake.dm_event("U1", "b")), timestamp=int(time.time()) - 6 * 60
    )
    unsigned = await fake.post_raw(
        bolt.url, json.dumps(fake.event_payload(fake.dm_event("U1", "c"))).encode(), sign=False
    )

    for status, _, _ in (wrong, stale, unsigned):
        assert status == 401
    await asyncio.sleep(0.1)  # give a (wrongly) scheduled listener a chance to show up
    assert ran == []
    assert fake.calls == []  # rejected before authorization, so not even auth.test


async def test_raw_payload_url_verification(fake: FakeSlack, bolt: Bolt) -> None:
    body = json.dumps({"token": "x", "challenge": "chal-123", "type": "url_verification"}).encode()
    status, text, _ = await fake.post_raw(bolt.url, body)
    assert status == 200 and "chal-123" in text


# ---------------------------------------------------------------------------- (4) slash command


async def test_slash_command_acks_fast_then_responds(fake: FakeSlack, bolt: Bolt) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    @bolt.app.command("/mem")
    async def on_command(ack: Any, command: dict[str, Any], respond: Any, client: AsyncWebClient) -> None:
        await ack()
        # Block until the test has seen the HTTP response: proves the ack went out first.
        await release.wait()
        await respond(f"you said {command['text']}")
        await client.chat_postEphemeral(channel=command["channel_id"], user=command["user_id"], text="psst")
        finished.set()

    body = fake.command_body("/mem", "status", user_id="U1", channel_id="C1")
    status, text, elapsed = await fake.post_command(bolt.url, body)
    assert status == 200 and text == ""
    assert elapsed < 3  # Slack's deadline; here it returned while the listener was still blocked
    assert fake.response_url_posts == []

    release.set()
    posted = await fake.wait_for_response_url_post(timeout=WAIT)
    assert posted["text"] == "you said status"
    assert fake.response_url_requests[0].url.startswith(fake.base_url + "/commands/")
    eph = await fake.wait_for_call("chat.postEphemeral", timeout=WAIT)
    assert eph.params["user"] == "U1" and eph.params["channel"] == "C1"
    assert eph.response["ok"] and "message_ts" in eph.response
    await asyncio.wait_for(finished.wait(), WAIT)


# ---------------------------------------------------------------------------- (5) files


async def test_file_share_files_info_and_private_download(fake: FakeSlack, bolt: Bolt) -> None:
    hosted = fake.host_file("notes.txt", b"remember the milk", "text/plain", user="U1", channels=["D1"])
    assert hosted["filetype"] == "text" and hosted["size"] == 17 and hosted["ims"] == ["D1"]
    got: dict[str, Any] = {}
    done = asyncio.Event()

    @bolt.app.event("message")
    async def on_file(event: dict[str, Any], client: AsyncWebClient) -> None:
        info = await client.files_info(file=event["files"][0]["id"])
        url = info["file"]["url_private_download"]
        headers = {"Authorization": f"Bearer {client.token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            got.update(status=resp.status, data=await resp.read(), ctype=resp.content_type)
        done.set()

    event = fake.dm_event("U1", "", files=[hosted])
    assert event["subtype"] == "file_share"
    await fake.post_event(bolt.url, fake.event_payload(event))
    await asyncio.wait_for(done.wait(), WAIT)

    assert got == {"status": 200, "data": b"remember the milk", "ctype": "text/plain"}
    (info_call,) = fake.calls_to("files.info")
    assert info_call.http_method == "GET" and info_call.params["file"] == hosted["id"]
    assert info_call.params["team_id"] == "T1"  # bolt's per-request client adds team_id
    assert info_call.response["file"]["url_private"] == hosted["url_private"]

    async with aiohttp.ClientSession() as session:
        # No token: a redirect to the sign-in page; following it yields HTML with status 200.
        async with session.get(hosted["url_private"], allow_redirects=False) as resp:
            assert resp.status == 302 and "/signin" in resp.headers["Location"]
        async with session.get(hosted["url_private"]) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert b"remember the milk" not in await resp.read()
        # Wrong token: refused with HTML, never the bytes.
        async with session.get(hosted["url_private"], headers={"Authorization": "Bearer xoxb-wrong"}) as resp:
            assert resp.status == 403 and resp.content_type == "text/html"

    assert [(d.authorized, d.had_auth_header, d.status) for d in fake.file_downloads] == [
        (True, True, 200),
        (False, False, 302),
        (False, False, 302),
        (False, True, 403),
    ]

    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token=fake.bot_token, base_url=fake.api_url).files_info(file="FNOPE")
    assert err.value.response["error"] == "file_not_found"


# ---------------------------------------------------------------------------- (6) users.info


async def test_users_info_reports_admin_flags(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    fake.add_user("UOWN", "boss", is_owner=True, tz="Europe/Berlin")

    admin = (await client.users_info(user="UADMIN"))["user"]
    plain = (await client.users_info(user="U1"))["user"]
    owner = (await client.users_info(user="UOWN"))["user"]
    assert admin["is_admin"] is True and admin["is_owner"] is False
    assert plain["is_admin"] is False and plain["tz"] == "America/Los_Angeles"
    assert owner["is_owner"] is True and owner["is_admin"] is True and owner["tz"] == "Europe/Berlin"
    assert fake.calls_to("users.info")[0].http_method == "GET"

    with pytest.raises(SlackApiError) as missing:
        await client.users_info(user="UNOBODY")
    assert missing.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as bad_auth:
        await AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url).users_info(user="U1")
    assert bad_auth.value.response["error"] == "invalid_auth"
    assert fake.calls[-1].token == "xoxb-wrong"  # rejected calls are still recorded


# ---------------------------------------------------------------------------- other Web API behaviour


async def test_web_api_methods_and_errors(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)

    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("UBOT", "B1", "T1")
    assert auth["url"].startswith("https://")

    opened = await client.conversations_open(users="U1")
    assert opened["channel"]["id"] == "D1"
    dm = (await client.conversations_info(channel="D1"))["channel"]
    assert dm["is_im"] is True and dm["user"] == "U1"
    assert (await client.conversations_info(channel="C9"))["channel"]["is_channel"] is True

    first = await client.chat_postMessage(channel="U1", text="to a user id lands in the DM")
    assert first["channel"] == "D1"
    second = await client.chat_postMessage(channel="C1", text="x")
    assert float(second["ts"]) > float(first["ts"])
    updated = await client.chat_update(channel="C1", ts=second["ts"], text="edited")
    assert updated["text"] == "edited" and updated["ts"] == second["ts"]
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C1", ts="1.000001", text="nope")

    # slack_sdk sends `params=` methods as a POST with a query string and no body, `json=`
    # methods as JSON; a form body is possible via data=. All three end up in params.
    await client.reactions_add(channel="C1", timestamp=second["ts"], name="brain")
    react = fake.calls_to("reactions.add")[0]
    assert react.http_method == "POST" and react.content_type == "" and react.params["name"] == "brain"
    with pytest.raises(SlackApiError) as again:
        await client.api_call(
            "reactions.add", data={"channel": "C1", "timestamp": second["ts"], "name": "brain"}
        )
    assert again.value.response["error"] == "already_reacted"
    form = fake.calls_to("reactions.add")[1]
    assert form.content_type == "application/x-www-form-urlencoded" and form.params["name"] == "brain"

    with pytest.raises(SlackApiError) as unknown:
        await client.api_call("bogus.method", params={"a": "1"})
    assert unknown.value.response["error"] == "unknown_method"
    assert fake.calls_to("bogus.method")[0].params == {"a": "1"}

    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=2)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C1", text="too fast")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "2"
    assert (await client.chat_postMessage(channel="C1", text="fine now"))["ok"]


async def test_wait_for_call_times_out_with_context(fake: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="chat.postMessage"):
        await fake.wait_for_call("chat.postMessage", timeout=0.05)


# ---------------------------------------------------------------------------- bolt wiring details


async def test_retry_headers_reach_the_app(fake: FakeSlack, bolt: Bolt) -> None:
    headers_seen: list[dict[str, Any]] = []

    @bolt.app.middleware
    async def capture(req: Any, resp: Any, next: Any) -> Any:  # bolt injects args by name: `next`
        headers_seen.append(dict(req.headers))
        return await next()

    @bolt.app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        return None

    status, _, _ = await fake.post_event(bolt.url, fake.event_payload(fake.dm_event("U1", "x")), retry_num=1)
    assert status == 200
    # bolt exposes headers lower-cased, each as a list of values
    assert headers_seen[0]["x-slack-retry-num"] == ["1"]
    assert headers_seen[0]["x-slack-retry-reason"] == ["http_timeout"]


async def test_self_events_are_ignored_by_bolt(fake: FakeSlack, bolt: Bolt) -> None:
    ran: list[str] = []

    @bolt.app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        ran.append(event["user"])

    own = fake.dm_event("UBOT", "my own reply")
    own["bot_id"] = fake.bot_id
    status, _, _ = await fake.post_event(bolt.url, fake.event_payload(own))
    assert status == 200
    # The self-event filter acks inside the request, so by now no listener can be pending.
    await fake.post_event(bolt.url, fake.event_payload(fake.dm_event("U1", "hi")))
    await asyncio.sleep(0.1)
    assert ran == ["U1"]


async def test_wrong_bot_token_fails_lazily_at_first_event(fake: FakeSlack) -> None:
    ran: list[str] = []
    app = AsyncApp(
        signing_secret=fake.signing_secret,
        client=AsyncWebClient(token="xoxb-stale", base_url=fake.api_url),
    )

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        ran.append(event["text"])

    # Constructing AsyncApp made no call at all (unlike sync App's token_verification_enabled).
    assert fake.calls == []
    runner, url = await _serve(app)
    try:
        status, text, _ = await fake.post_event(url, fake.event_payload(fake.dm_event("U1", "hi")))
    finally:
        await runner.cleanup()
    assert status == 200 and "reinstall" in text  # bolt's user-facing authorize error
    assert [c.method for c in fake.calls] == ["auth.test"]
    assert fake.calls[0].response == {"ok": False, "error": "invalid_auth"}
    assert ran == []
