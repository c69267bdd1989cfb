"""Shared fixtures: a scripted model server on 127.0.0.1, settings pointing at temporary SQLite and Milvus Lite
files, and the real bot service over them."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import Message
from membot.agent.store.db import Database
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.cli_helpers import SETTING_PREFIXES
from tests.fakes.openai_server import ScriptedModel

EMBEDDING_DIM = 64


def make_settings(home: Path, model: ScriptedModel, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": model.base_url,
        "MEMBOT_HOME": str(home),
        "MEMBOT_EMBEDDING_DIM": EMBEDDING_DIM,
        "MEMBOT_CONTEXT_WINDOW": 16_000,
        "MEMBOT_MODEL_MAX_RETRIES": 0,
    }
    values.update(overrides)
    # No .env file; the process environment is emptied of settings by `_no_outside_settings`.
    return Settings(_env_file=None, **values)


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings exported in the developer's shell (a real database URL, a Discord token) never reach a test."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "membot-home"


@pytest.fixture
def settings(home: Path, model: ScriptedModel) -> Settings:
    return make_settings(home, model)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[BotService]:
    svc = await BotService.open(settings)
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture
def user() -> Callable[[str], UserRef]:
    return lambda name: UserRef("terminal", "local", name, name)


async def collect(events: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in events]


@asynccontextmanager
async def writer_held(db: Database) -> AsyncIterator[None]:
    """The SQLite writer thread held inside a unit of work while the block runs: whatever is begun meanwhile
    queues behind it, and runs as one group once the block ends."""
    gate = threading.Event()
    held = asyncio.ensure_future(db.write(lambda session: gate.wait(10)))
    await asyncio.sleep(0.05)  # the writer is inside it
    try:
        yield
    finally:
        gate.set()
        await held


async def store_messages(db: Database, *messages: Message) -> None:
    """Messages written as a step writes them (recall memory's insert), each into its own agent's memory."""

    def write(session: Session) -> None:
        for message in messages:
            RecallMemory(db, message.agent_id, TermFrequencies()).add(session, message)

    await db.write(write)
