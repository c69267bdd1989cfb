"""Running `membot` in a child process against the scripted model, as a person or a script would."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.openai_server import ScriptedModel

# The product's settings come from variables with these prefixes; none of the developer's may reach a test.
SETTING_PREFIXES = ("OPENAI_", "AZURE_OPENAI_", "MEMBOT_", "DISCORD_", "SLACK_")


def without_settings(environ: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith(SETTING_PREFIXES)}


def child_env(model: ScriptedModel, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = without_settings(dict(os.environ))
    env.update(
        OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=model.base_url, MEMBOT_HOME=str(home),
        MEMBOT_EMBEDDING_DIM="64", MEMBOT_MODEL_MAX_RETRIES="0",
    )
    env.update(extra or {})
    return env


async def start(model: ScriptedModel, home: Path, *args: str, env: dict[str, str] | None = None):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "membot", *args, env=child_env(model, home, env), cwd=str(home.parent),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def membot(
    model: ScriptedModel, home: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await start(model, home, *args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()
