"""/memory export and /forget on Slack: the real bolt app against FakeSlack. The export arrives as a file in the
requester's IM with the bot (files_upload_v2); /forget asks first and deletes on `/forget confirm`."""

# ruff: noqa: F811 - the Slack fixtures are imported from test_slack_adapter and used by name

from __future__ import annotations

import json

from membot.bot.identity import find_agent
from tests.fakes.openai_server import send, tool_call
from tests.test_slack_adapter import (  # noqa: F401 (fixtures, used by name)
    ALICE,
    WAIT,
    bot,
    command,
    fake,
    settings,
)


async def _talk(fake, bot, model) -> None:
    model.script(tool_call("archival_memory_insert", {"content": "Alice's PIN is 4417", "request_heartbeat": True}),
                 send("Noted."))
    await fake.post_event(bot, fake.event_payload(fake.dm_event("U1", "my PIN is 4417")))
    await fake.wait_for_call("chat.postMessage", WAIT, lambda c: c.params["channel"] == "D1")


async def test_slack_memory_export_is_uploaded_to_the_requesters_im(fake, bot, model, service):
    await _talk(fake, bot, model)
    answer = await command(fake, bot, "/memory", "export", "U1")
    assert answer["response_type"] == "ephemeral" and "direct messages" in answer["text"]
    [upload] = fake.uploads
    assert upload.channel == "D1" and upload.name.startswith("membot-memory-alice-")
    assert "membot memory import" in upload.initial_comment
    data = json.loads(upload.data)
    assert data["user"]["user_id"] == "U1" and [p["text"] for p in data["passages"]] == ["Alice's PIN is 4417"]

    refused = await command(fake, bot, "/memory", "export <@U1|alice>", "U2")
    assert "operators" in refused["text"] and len(fake.uploads) == 1
    allowed = await command(fake, bot, "/memory", "export <@U1|alice>", "UADMIN")
    assert "direct messages" in allowed["text"]
    assert fake.uploads[-1].channel == fake.dm_channel_for("UADMIN")  # to the operator, not to Alice
    assert json.loads(fake.uploads[-1].data)["passages"] == data["passages"]


async def test_slack_forget_asks_then_deletes_on_confirm(fake, bot, model, service):
    await _talk(fake, bot, model)
    warning = await command(fake, bot, "/forget", "", "U1")
    assert warning["response_type"] == "ephemeral" and "/forget confirm" in warning["text"]
    assert await find_agent(service.engine.db, ALICE) is not None

    refused = await command(fake, bot, "/forget", "<@U1|alice> confirm", "U2")
    assert "operators" in refused["text"]
    assert await find_agent(service.engine.db, ALICE) is not None

    done = await command(fake, bot, "/forget", "confirm", "U1")
    assert "deleted" in done["text"] and await find_agent(service.engine.db, ALICE) is None


async def test_slack_operator_forgets_someone_else(fake, bot, model, service):
    await _talk(fake, bot, model)
    asked = await command(fake, bot, "/forget", "<@U1|alice>", "UADMIN")
    assert "/forget U1 confirm" in asked["text"]
    done = await command(fake, bot, "/forget", "<@U1|alice> confirm", "UADMIN")
    assert "The agent of alice" in done["text"] and await find_agent(service.engine.db, ALICE) is None
