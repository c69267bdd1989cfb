"""/memory export and /forget as users reach them: on Discord (the real adapter against the fake Discord), in the
terminal chat, and `membot memory export | import | forget` from the shell. Slack's are in
test_memory_export_slack.py; the export's contents and the deletion's completeness in test_memory_portable.py."""

# ruff: noqa: F811 - the Discord fixtures are imported from test_discord_adapter and used by name

from __future__ import annotations

import io
import json

from membot.adapters.terminal import Terminal
from membot.bot.identity import UserRef, find_agent
from tests.cli_helpers import membot
from tests.fakes.openai_server import send, tool_call
from tests.test_discord_adapter import (  # noqa: F401 (fixtures, used by name)
    ADMIN,
    ALICE,
    BOB,
    EPHEMERAL,
    GENERAL,
    GUILD,
    _user_option,
    alice_ref,
    bot,
    dm,
    fake,
    settings,
    slash,
)


async def _talk(fake, model) -> None:
    model.script(tool_call("archival_memory_insert", {"content": "Alice's PIN is 4417", "request_heartbeat": True}),
                 send("Noted."))
    await fake.send_dm(ALICE, "my PIN is 4417")
    await fake.wait_for_message(dm(ALICE))


def _export_file(fake, interaction) -> dict:
    """The JSON file attached to the interaction's follow-up."""
    [call] = [c for c in fake.calls_to("POST", "/webhooks/{app}/{token}") if c.files and interaction.token in c.path]
    [upload] = call.files
    assert upload.filename.startswith("membot-memory-") and upload.filename.endswith(".json")
    return json.loads(upload.data)


async def test_discord_memory_export_comes_back_privately_as_a_file(fake, bot, model, service):
    await _talk(fake, model)
    interaction = await slash(fake, ALICE, "memory", [{"name": "action", "type": 3, "value": "export"}])
    followup = await interaction.wait_followup()
    assert followup["flags"] & EPHEMERAL and "membot memory import" in followup["content"]
    data = _export_file(fake, interaction)
    assert data["user"]["user_id"] == str(ALICE) and [p["text"] for p in data["passages"]] == ["Alice's PIN is 4417"]
    assert any("my PIN is 4417" in (m["content"] or "") for m in data["messages"])

    # Someone else's: refused for a member, allowed for an operator.
    options = [{"name": "user", "type": 6, "value": str(ALICE)}, {"name": "action", "type": 3, "value": "export"}]
    refused = await slash(fake, BOB, "memory", options, guild_id=GUILD, channel_id=GENERAL,
                          resolved=_user_option(fake, ALICE))
    followup = await refused.wait_followup()
    assert "operators" in followup["content"] and not followup.get("attachments")
    allowed = await slash(fake, ADMIN, "memory", options, guild_id=GUILD, channel_id=GENERAL,
                          resolved=_user_option(fake, ALICE))
    await allowed.wait_followup()
    assert _export_file(fake, allowed)["passages"] == data["passages"]


async def test_discord_forget_asks_first_then_deletes(fake, bot, model, service):
    await _talk(fake, model)
    first = await slash(fake, ALICE, "forget")
    warning = await first.wait_followup()
    assert warning["flags"] & EPHEMERAL and "/forget confirm:yes" in warning["content"]
    assert await find_agent(service.engine.db, alice_ref()) is not None  # nothing deleted yet

    about_alice = [{"name": "user", "type": 6, "value": str(ALICE)}, {"name": "confirm", "type": 3, "value": "yes"}]
    refused = await slash(fake, BOB, "forget", about_alice, guild_id=GUILD, channel_id=GENERAL,
                          resolved=_user_option(fake, ALICE))
    assert "operators" in (await refused.wait_followup())["content"]
    assert await find_agent(service.engine.db, alice_ref()) is not None

    confirmed = await slash(fake, ALICE, "forget", [{"name": "confirm", "type": 3, "value": "yes"}])
    done = await confirmed.wait_followup()
    assert done["flags"] & EPHEMERAL and "deleted" in done["content"]
    assert await find_agent(service.engine.db, alice_ref()) is None
    # She can start again: a new agent, which knows nothing of the old one.
    model.script(send("Hello, I'm new here."))
    await fake.send_dm(ALICE, "hi")
    assert (await fake.wait_for_message(dm(ALICE), predicate=lambda m: "new here" in m["content"]))
    assert "4417" not in json.dumps(model.requests[-1]["messages"])


async def test_discord_operator_forgets_someone_else(fake, bot, model, service):
    await _talk(fake, model)
    options = [{"name": "user", "type": 6, "value": str(ALICE)}, {"name": "confirm", "type": 3, "value": "yes"}]
    done = await slash(fake, ADMIN, "forget", options, guild_id=GUILD, channel_id=GENERAL,
                       resolved=_user_option(fake, ALICE))
    assert "The agent of alice" in (await done.wait_followup())["content"]
    assert await find_agent(service.engine.db, alice_ref()) is None


# ----- terminal ------------------------------------------------------------------------------------------


async def test_terminal_export_writes_a_file_and_forget_asks_then_ends_the_chat(service, model, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    user = UserRef("terminal", "local", "me", "me")
    model.script(send("Hi!"), send("Noted."))
    out, err = io.StringIO(), io.StringIO()
    typed = "remember the blue door\n/memory export\n/forget\nno\n/forget\nyes\nstill here?\n"
    await Terminal(service, user, out, err, io.StringIO(typed)).run(None, None)
    lines = err.getvalue()
    [written] = list(tmp_path.glob("membot-memory-me-*.json"))
    assert f"Wrote everything your agent holds to {written}" in lines
    assert any("remember the blue door" in (m["content"] or "") for m in json.loads(written.read_bytes())["messages"])
    assert "Nothing was deleted." in lines and "Type yes to delete it" in lines
    assert "Your agent and everything it held are deleted" in lines and "The chat ends here" in lines
    assert await find_agent(service.engine.db, user) is None
    assert out.getvalue() == "Hi!\nNoted.\n"  # "still here?" was never sent: the chat had ended


# ----- the shell ---------------------------------------------------------------------------------------------


async def test_cli_export_import_and_forget(model, home, tmp_path):
    model.script(send("Hi Alice."))
    code, _, err = await membot(model, home, "chat", "--user", "alice", stdin="I like green tea\n")
    assert code == 0, err
    target = tmp_path / "alice.json"
    code, _, err = await membot(model, home, "memory", "export", "--user", "alice", str(target))
    assert code == 0 and f"to {target}" in err
    code, out, _ = await membot(model, home, "memory", "export", "--user", "alice", "-")
    assert code == 0 and json.loads(out)["messages"] == json.loads(target.read_bytes())["messages"]

    code, _, err = await membot(model, home, "memory", "import", str(target))
    assert code == 2 and "already has an agent" in err and "--replace" in err
    code, out, err = await membot(model, home, "memory", "import", str(target), "--user", "bob")
    assert code == 0 and "as the agent of bob" in out, err
    code, out, err = await membot(model, home, "memory", "import", str(target), "--replace")
    assert code == 0 and "as the agent of alice" in out, err

    code, _, err = await membot(model, home, "memory", "forget", "--user", "bob")
    assert code == 2 and "--yes" in err  # nobody at stdin to confirm
    code, out, err = await membot(model, home, "memory", "forget", "--user", "bob", "--yes")
    assert code == 0 and "deleted" in out, err
    code, _, err = await membot(model, home, "memory", "show", "--user", "bob")
    assert code == 2 and "no agent" in err

    other = tmp_path / "elsewhere"  # another deployment: its own home, database and Milvus
    code, out, err = await membot(model, other, "memory", "import", str(target))
    assert code == 0 and "as the agent of alice" in out, err
    code, out, _ = await membot(model, other, "memory", "show", "--user", "alice")
    assert code == 0 and "green tea" not in out  # recall is not in `show`; the messages count is
    code, out, _ = await membot(model, other, "memory", "search", "--user", "alice", "green tea")
    assert code == 0 and "I like green tea" in out

    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    code, _, err = await membot(model, home, "memory", "import", str(broken))
    assert code == 2 and "not a membot memory export" in err
    code, _, err = await membot(model, home, "memory", "import", str(tmp_path / "missing.json"))
    assert code == 2 and "Could not read" in err
