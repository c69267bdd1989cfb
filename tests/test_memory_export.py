"""/memory export and /forget as users reach them: on Discord (the real adapter against the fake Discord), in the
terminal chat, and `membot memory export | import | forget` from the shell. Slack's are in
test_memory_export_slack.py; the export's contents and the deletion's completeness in test_memory_portable.py."""

# ruff: noqa: F811 - the Discord fixtures are imported from test_discord_adapter and used by name

from __future__ import annotations

import argparse
import io
import json

import pytest

from membot.adapters.terminal import Terminal
from membot.bot.identity import UserRef, find_agent
from membot.bot.memory_cli import SHELL
from membot.bot.memory_cli import add_arguments as add_memory_file_arguments
from membot.bot.memory_cli import run as run_memory_file
from membot.bot.service import CommandError
from membot.bot.views import memory_text
from tests.conftest import collect
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


async def test_cli_export_import_elsewhere_and_forget_asks_for_yes(model, home, tmp_path, membot_forks):
    """The shell path end to end, each command a process of its own. Each option's behaviour is checked once,
    in process, by the test below."""
    membot = membot_forks.membot
    model.script(send("Hi Alice."))
    code, _, err = await membot(model, home, "chat", "--user", "alice", stdin="I like green tea\n")
    assert code == 0, err
    target = tmp_path / "alice.json"
    code, _, err = await membot(model, home, "memory", "export", "--user", "alice", str(target))
    assert code == 0 and f"to {target}" in err

    other = tmp_path / "elsewhere"  # another deployment: its own home, database and Milvus
    code, out, err = await membot(model, other, "memory", "import", str(target))
    assert code == 0 and "as the agent of alice" in out, err
    code, out, _ = await membot(model, other, "memory", "search", "--user", "alice", "green tea")
    assert code == 0 and "I like green tea" in out

    code, _, err = await membot(model, home, "memory", "forget", "--user", "alice")
    assert code == 2 and "--yes" in err  # nobody at stdin (a pipe) to confirm


def _shell(*argv: str) -> argparse.Namespace:
    """`membot memory ARGV` parsed as the command line parses it."""
    parser = argparse.ArgumentParser(prog="membot memory")
    add_memory_file_arguments(parser.add_subparsers(dest="action", required=True))
    return parser.parse_args(argv)


async def test_cli_memory_commands_each_option(service, model, tmp_path, capsys, monkeypatch):
    """`membot memory export | import | forget` over the bot service, as the command line runs them; a
    CommandError is what `membot` prints after "membot:" with exit code 2 (as the test above shows)."""
    alice = UserRef("terminal", "local", "alice", "alice")
    model.script(send("Hi Alice."))
    await collect(service.chat(alice, "I like green tea"))
    target = tmp_path / "alice.json"
    assert await run_memory_file(service, _shell("export", "--user", "alice", str(target))) == 0
    assert f"to {target}" in capsys.readouterr().err
    assert await run_memory_file(service, _shell("export", "--user", "alice", "-")) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == json.loads(target.read_bytes())["messages"]

    with pytest.raises(CommandError, match="already has an agent") as refused:
        await run_memory_file(service, _shell("import", str(target)))
    assert "--replace" in str(refused.value)
    assert await run_memory_file(service, _shell("import", str(target), "--user", "bob")) == 0
    assert "as the agent of bob" in capsys.readouterr().out
    assert await run_memory_file(service, _shell("import", str(target), "--replace")) == 0
    assert "as the agent of alice" in capsys.readouterr().out
    # Recall is not in `memory show`; the messages count is.
    assert "green tea" not in memory_text(await service.memory(SHELL, alice, is_admin=True))

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: nobody to confirm
    with pytest.raises(CommandError, match="--yes"):
        await run_memory_file(service, _shell("forget", "--user", "bob"))
    assert await run_memory_file(service, _shell("forget", "--user", "bob", "--yes")) == 0
    assert "deleted" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no agent"):
        await service.memory(SHELL, UserRef("terminal", "local", "bob", "bob"), is_admin=True)

    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(CommandError, match="not a membot memory export"):
        await run_memory_file(service, _shell("import", str(broken)))
    with pytest.raises(CommandError, match="Could not read"):
        await run_memory_file(service, _shell("import", str(tmp_path / "missing.json")))
