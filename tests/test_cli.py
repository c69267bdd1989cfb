"""`membot` as a person runs it: separate processes over the same files, scripted through stdin."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import membot
from tests.fakes.openai_server import send, tool_call

PAPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "memgpt_paper.pdf"


async def test_a_second_process_remembers_and_users_stay_apart(model, home, membot_forks):
    membot = membot_forks.membot
    model.script(
        send("Hello! I'm Sam.", thought="SECRET-THOUGHT-1 a newcomer"),
        tool_call("core_memory_append", {"name": "human", "content": "Name: Alice", "request_heartbeat": True},
                  "SECRET-THOUGHT-2 she is Alice"),
        send("Nice to meet you, Alice."),
        tool_call("archival_memory_insert", {"content": "Alice's cat is called Tom", "request_heartbeat": True}),
        send("I'll remember Tom."),
    )
    code, out, err = await membot(model, home, "chat", "--user", "alice",
                                  stdin="My name is Alice\nMy cat is Tom\n/exit\n")
    assert code == 0, err
    assert out.splitlines() == ["Hello! I'm Sam.", "Nice to meet you, Alice.", "I'll remember Tom."]
    assert "SECRET-THOUGHT" not in out and "SECRET-THOUGHT-1" in err and "core_memory_append" in err

    model.script(
        send("Welcome back, Alice!"),
        tool_call("archival_memory_search", {"query": "cat", "request_heartbeat": True}),
        send("Your cat is Tom."),
    )
    code, out, err = await membot(model, home, "chat", "--user", "alice", stdin="What's my cat called?\n")
    assert code == 0, err
    assert out.splitlines() == ["Welcome back, Alice!", "Your cat is Tom."]
    login = model.requests[-3]["messages"]
    assert "Name: Alice" in login[0]["content"]  # core memory survived
    assert "last login was" in login[-1]["content"]
    assert any("My cat is Tom" in (m.get("content") or "") for m in login)  # so did the context window
    assert "Alice's cat is called Tom" in model.requests[-1]["messages"][-2]["content"]

    # Another user's agent knows neither the name nor the cat.
    model.script(send("Hi, I'm Sam."), tool_call("archival_memory_search", {"query": "cat Tom"}))
    code, out, err = await membot(model, home, "chat", "--user", "bob", stdin="Do you know Tom?\n")
    assert code == 0, err
    assert "Name: Alice" not in model.requests[-2]["messages"][0]["content"]
    assert "No passages found" in model.requests[-1]["messages"][-1]["content"] or "No passages found" in err

    code, out, err = await membot(model, home, "memory", "show", "--user", "alice")
    assert code == 0 and "Name: Alice" in out and "Archival memory: 1 passage of its own" in out
    code, out, err = await membot(model, home, "memory", "search", "--user", "alice", "--limit", "3", "cat")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all("UTC" in line for line in lines)
    assert any("My cat is Tom" in line for line in lines)
    code, out, err = await membot(model, home, "memory", "search", "--user", "alice", "--archival", "cat")
    assert code == 0 and "Alice's cat is called Tom" in out
    code, out, err = await membot(model, home, "memory", "show", "--user", "nobody")
    assert code == 2 and "no agent" in err


@pytest.mark.skipif(not PAPER.exists(), reason="shared/data/memgpt_paper.pdf not present")
async def test_load_directory_and_sources(model, home, tmp_path, membot_forks):
    membot = membot_forks.membot
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 truncated")
    code, out, err = await membot(model, home, "load", "directory", "--name", "memgpt_research_paper",
                                  "--input-files", str(PAPER), str(bad))
    assert code == 1  # one file failed
    assert "Loaded" in out and "13 documents from memgpt_research_paper" in out
    assert "broken.pdf" in err and "Traceback" not in err
    code, out, err = await membot(model, home, "load", "directory", "--name", "memgpt_research_paper",
                                  "--input-files", str(PAPER))
    assert code == 0 and out.strip() == "Nothing new loaded into memgpt_research_paper: 1 file was already there"
    code, out, err = await membot(model, home, "sources")
    assert "memgpt_research_paper" in out and "13 documents" in out

    # The seed walkthrough: attach it in the chat and ask about it.
    model.script(
        send("Hello, I answer questions about documents."),
        send("I'll search it when you ask."),
        tool_call("archival_memory_search", {"query": "virtual context management", "request_heartbeat": True}),
        send("MemGPT manages virtual context, like an OS pages memory."),
    )
    code, out, err = await membot(
        model, home, "chat", "--user", "alice", "--persona", "memgpt_doc",
        stdin="/attach memgpt_research_paper\nTell me about the paper.\n/memory\n/attach nothing\n/exit\n",
    )
    assert code == 0, err
    assert "Attached memgpt_research_paper" in err and "13 documents" in err
    assert "Attached sources: memgpt_research_paper" in err
    assert "no source called 'nothing'" in err
    assert out.splitlines()[-1] == "MemGPT manages virtual context, like an OS pages memory."
    found = model.requests[-1]["messages"][-2]["content"]
    assert "memgpt_paper.pdf, page" in found
    # --scope before the action counts for delete too: there is no such source in that scope.
    code, out, err = await membot(model, home, "sources", "--scope", "discord:9", "delete", "memgpt_research_paper")
    assert code == 2 and "no source called" in err
    code, out, err = await membot(model, home, "sources", "delete", "memgpt_research_paper")
    assert code == 0 and "Deleted memgpt_research_paper" in out
    code, out, err = await membot(model, home, "sources", "delete", "nothing")
    assert code == 2 and "no source called" in err


async def test_discord_sync_with_discord_unreachable_says_so(model, home):
    env = {"DISCORD_TOKEN": "not-a-real-token", "MEMBOT_DISCORD_API_URL": "http://127.0.0.1:9/api/v10"}
    code, out, err = await membot(model, home, "discord", "sync", env=env)
    assert code == 2 and "Could not reach Discord" in err
    assert "Traceback" not in err
