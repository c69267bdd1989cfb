"""`membot configure`: the .env file it writes (pure), the scripted run, and a person at a terminal."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from membot.bot.cli import main
from membot.bot.configure import mask, merge_env, parse_env, quote, write_env
from tests.cli_helpers import without_settings
from tests.fakes.openai_server import error, text
from tests.pty_helpers import PtyMembot

EXISTING = """# my notes: keep these
OPENAI_API_KEY=sk-old-key-0000000000
export MEMBOT_MODEL=gpt-4o
SOMETHING_ELSE="not membot's"   # a comment after it

MEMBOT_MODEL=gpt-4o-again
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_merge_rewrites_in_place_keeps_the_rest_and_appends_new_values():
    merged = merge_env(EXISTING, {"MEMBOT_MODEL": "llama3", "OPENAI_API_KEY": None, "MEMBOT_EMBEDDING_DIM": "64"})
    lines = merged.splitlines()
    assert lines[0] == "# my notes: keep these"
    assert lines[1] == "MEMBOT_MODEL=llama3"  # the first assignment rewritten, the repeated one dropped
    assert "SOMETHING_ELSE=\"not membot's\"   # a comment after it" in lines
    assert lines[-1] == "MEMBOT_EMBEDDING_DIM=64"
    assert parse_env(merged) == {"MEMBOT_MODEL": "llama3", "SOMETHING_ELSE": "not membot's", "MEMBOT_EMBEDDING_DIM": "64"}
    assert merge_env("", {"A": "1"}).startswith("# Written by `membot configure`")


@pytest.mark.parametrize("value", ["plain", "with space", 'a "quoted" #not-a-comment', "back\\slash", "pw=x&y"])
def test_values_read_back_as_written(value):
    assert parse_env(f"KEY={quote(value)}\n") == {"KEY": value}


def test_masks_never_show_a_secret():
    assert mask("OPENAI_API_KEY", "sk-proj-abcdefghijklmnop1234") == "sk-…1234"
    assert mask("DISCORD_TOKEN", "short") == "set, hidden"
    assert mask("MEMBOT_DATABASE_URL", "postgresql+asyncpg://bob:hunter2@db/membot") == (
        "postgresql+asyncpg://bob:***@db/membot")
    assert mask("MEMBOT_MODEL", "gpt-4o") == "gpt-4o"


def test_write_env_is_atomic_and_private(tmp_path):
    path = tmp_path / ".env"
    path.write_text("OLD=1\n")
    path.chmod(0o644)
    write_env(path, "NEW=2\n")
    assert path.read_text() == "NEW=2\n" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temporary file left behind


async def _configure(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.chdir(cwd)
    # In a thread: the command runs its own event loop, and the scripted model serves from this one.
    return await asyncio.to_thread(main, ["configure", *args])


async def test_non_interactive_tries_and_writes_only_what_changed(model, tmp_path, monkeypatch, capsys):
    (tmp_path / ".env").write_text(EXISTING)
    model.script(text("OK"))
    code = await _configure(
        tmp_path, monkeypatch, "--non-interactive", "--base-url", model.base_url, "--api-key", "sk-new-key-123456789",
        "--embedding-dim", "64", "--home", str(tmp_path / "home"), "--model", "",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "✓ model" in out and "✓ embeddings: text-embedding-3-small gives 64-dimensional" in out
    assert "✓ database" in out and "✓ archival store: Milvus Lite" in out
    assert "sk-new-key" not in out
    written = parse_env((tmp_path / ".env").read_text())
    assert written["OPENAI_API_KEY"] == "sk-new-key-123456789" and written["OPENAI_BASE_URL"] == model.base_url
    assert "MEMBOT_MODEL" not in written and written["SOMETHING_ELSE"] == "not membot's"  # '' cleared it
    assert _mode(tmp_path / ".env") == 0o600
    assert model.request_headers[0]["Authorization"] == "Bearer sk-new-key-123456789"


async def test_non_interactive_writes_nothing_when_a_check_fails(model, tmp_path, monkeypatch, capsys):
    model.script(error(401))
    code = await _configure(
        tmp_path, monkeypatch, "--non-interactive", "--base-url", model.base_url, "--api-key", "sk-wrong-key-000000",
        "--embedding-dim", "64", "--home", str(tmp_path / "home"),
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "✗ model: The model endpoint at" in captured.out and "refused the API key" in captured.out
    assert "nothing written" in captured.err and not (tmp_path / ".env").exists()
    assert await _configure(tmp_path, monkeypatch, "--non-interactive", "--skip-checks", "--model", "x") == 0
    assert parse_env((tmp_path / ".env").read_text()) == {"MEMBOT_MODEL": "x"}


async def test_a_person_at_a_terminal(model, tmp_path):
    home = tmp_path / "home"
    # An unreachable Discord (this machine has no network either): reported, not fatal.
    (tmp_path / ".env").write_text("# mine\nMEMBOT_DISCORD_API_URL=http://127.0.0.1:9/api/v10\n")
    model.script(text("OK"))
    run = PtyMembot("configure", env=without_settings(dict(os.environ)), cwd=tmp_path)
    try:
        await run.answer(r"Endpoint URL \[OpenAI\]: ", model.base_url)
        await run.answer(r"API key \(not shown as you type\) \[not set\]: ", "sk-typed-secret-98765")
        await run.answer(r"Chat model \[gpt-4o-mini\]: ", "")
        await run.expect(r"✓ model: gpt-4o-mini at http")
        await run.answer(r"Embedding model \[text-embedding-3-small\]: ", "")
        await run.answer(r"Dimension \[1536\]: ", "sixty-four")
        await run.answer(r"A whole number, please\.\s+Dimension \[1536\]: ", "64")
        await run.expect(r"✓ embeddings")
        await run.answer(r"Home folder \[~/.membot\]: ", str(home))
        await run.answer(r"Database URL \[SQLite in the home folder\]: ", "")
        await run.expect(r"✓ database")
        await run.answer(r"Milvus \[milvus.db in the home folder\]: ", "")
        await run.expect(r"✓ archival store")
        await run.answer(r"Set up Discord\? \[y/N\]: ", "y")
        await run.answer(r"Discord bot token \(not shown\) \[not set\]: ", "discord-typed-secret-4321")
        await run.answer(r"Monologue channel id \[none\]: ", "1234")
        await run.expect(r"✗ Discord: Could not reach Discord")
        await run.answer(r"Set up Slack\? \[y/N\]: ", "")
        await run.expect(r"Wrote \.env \(only you can read it\)")
        assert await run.wait() == 0
    finally:
        run.close()
    assert "typed-secret" not in run.text  # neither key was echoed
    path = tmp_path / ".env"
    assert _mode(path) == 0o600
    assert path.read_text().startswith("# mine\n")
    assert parse_env(path.read_text()) == {
        "MEMBOT_DISCORD_API_URL": "http://127.0.0.1:9/api/v10",
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "sk-typed-secret-98765",
        "MEMBOT_EMBEDDING_DIM": "64",
        "MEMBOT_HOME": str(home),
        "DISCORD_TOKEN": "discord-typed-secret-4321",
        "DISCORD_MONOLOGUE_CHANNEL_ID": "1234",
    }
    assert (home / "membot.db").exists()  # the database was tried, and so migrated
