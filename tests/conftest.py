"""Shared fixtures: a scripted model server on 127.0.0.1, settings pointing at a temporary database (SQLite, or
PostgreSQL for the modules marked `both_databases`) and Milvus Lite file, and the real bot service over them.

Databases: a module whose tests exercise the store sets `pytestmark = pytest.mark.both_databases`; its tests that
use a database (through `settings`, `service` or `database_url`) then run twice, `[sqlite]` and `[postgresql]`.
On PostgreSQL each test gets a database of its own, cloned from a template the app's own `Database.open` built
once per run, and dropped after it; the template is dropped at the end of the run. A whole database per test,
not emptied tables: a test may change the schema (a failing trigger, say) and leave connections open. Other
modules run on SQLite only, to keep the suite fast. `TEST_POSTGRES_URL` names another server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import Message
from membot.agent.store.db import Database
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.cli_helpers import SETTING_PREFIXES
from tests.fakes.openai_server import ScriptedModel
from tests.membot_forks import membot_forks  # noqa: F401 (one fork server per worker, see there)
from tests.milvus_server import milvus_server  # noqa: F401 (one session server for every module, see there)

EMBEDDING_DIM = 64


DIALECTS = ("sqlite", "postgresql")
# Not a MEMBOT_ variable: those are settings, and `_no_outside_settings` keeps them from every test.
POSTGRES_ENV = "TEST_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432"

# The PostgreSQL database of the test running now, if it runs on PostgreSQL (set by `database_url`): every
# service the test opens through `make_settings` uses it, as its SQLite file would follow `home`.
_test_postgres_url: str | None = None


def make_settings(home: Path, model: ScriptedModel, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": model.base_url,
        "MEMBOT_HOME": str(home),
        "MEMBOT_EMBEDDING_DIM": EMBEDDING_DIM,
        "MEMBOT_CONTEXT_WINDOW": 16_000,
        "MEMBOT_MODEL_MAX_RETRIES": 0,
    }
    if _test_postgres_url is not None:
        values["MEMBOT_DATABASE_URL"] = _test_postgres_url
    values.update(overrides)
    # No .env file; the process environment is emptied of settings by `_no_outside_settings`.
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def small_window(home: Path, database_url: str, window: int, default: Any) -> AsyncIterator[tuple[BotService,
                                                                                                      ScriptedModel]]:
    """A service whose model has a small context window, answering with `default` unless scripted."""
    async with ScriptedModel(context_window=window, default=default) as model:
        settings = make_settings(home, model, MEMBOT_CONTEXT_WINDOW=window, MEMBOT_DATABASE_URL=database_url)
        service = await BotService.open(settings)
        try:
            yield service, model
        finally:
            await service.close()


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_databases: the tests that use a database run on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database_url", DIALECTS, indirect=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's
    return True


class PostgresServer:
    """The server the PostgreSQL tests run on, and this run's template database (the app's schema, empty)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.prefix = f"membot_test_{os.getpid()}_{secrets.token_hex(3)}"
        self.template = self.prefix
        self._numbers = count(1)
        self.problem: str | None = None  # why the tests cannot use it

    def url(self, database: str) -> str:
        return f"{self.base}/{database}"

    async def admin(self, *statements: str) -> list[str]:
        """Run statements on the `postgres` database, outside a transaction (CREATE/DROP DATABASE need it);
        the names the last one returns, if it returns rows."""
        engine = create_async_engine(
            self.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"timeout": 10}
        )
        try:
            async with engine.connect() as connection:
                result = None
                for statement in statements:
                    result = await connection.execute(text(statement))
                return list(result.scalars()) if result is not None and result.returns_rows else []
        finally:
            await engine.dispose()

    async def clone(self) -> str:
        """A fresh database for one test: copying the template and dropping the copy after the test took 55 ms
        (p50) on an idle machine, 150 ms beside other test runs; emptying the tables instead took 15-25 ms."""
        name = f"{self.prefix}_{next(self._numbers)}"
        await self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def drop(self, name: str) -> None:
        # FORCE: a connection a failed test left open must not keep its database.
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def drop_abandoned(self) -> None:
        """Databases of earlier runs on this machine that were killed before their teardown could drop them (a
        `timeout`, a SIGKILL): their process is gone. Only on a local server, where the pids are this machine's."""
        if make_url(self.base).host not in ("127.0.0.1", "localhost", "::1"):
            return
        for name in await self.admin(r"SELECT datname FROM pg_database WHERE datname LIKE 'membot\_test\_%'"):
            pid = name.split("_")[2]
            if pid.isdigit() and not _process_alive(int(pid)):
                await self.drop(name)

    async def drop_all(self) -> None:
        """Every database of this run, clones and template, whatever the tests left."""
        pattern = self.prefix.replace("_", "\\_") + "%"  # "_" alone would match any character
        names = await self.admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}' ORDER BY datname DESC")
        for name in names:
            await self.drop(name)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres() -> AsyncIterator[PostgresServer]:
    """The PostgreSQL server with this run's template, or the reason it cannot be used. Set up only when a test
    runs on PostgreSQL: a run on SQLite alone never connects."""
    base = os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT
    server = PostgresServer(base)
    try:
        await server.admin(f'CREATE DATABASE "{server.template}"')
    except Exception as exc:  # down, refused, no right to create databases: the tests cannot run, the same
        where = make_url(base).render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc  # the driver's own words, without SQLAlchemy's wrapping
        server.problem = (
            f"PostgreSQL not reachable or usable at {where} ({cause.__class__.__name__}: {cause}); start it, or "
            f"set {POSTGRES_ENV} to a server where the user may create databases (postgresql+asyncpg://user@host:port)"
        )
        yield server
        return
    await server.drop_abandoned()
    try:
        # The schema as the app makes it. A failure here is the app's, not the server's: every PostgreSQL test
        # errors with it.
        db = await Database.open(server.url(server.template))
        await db.close()
        yield server
    finally:
        await server.drop_all()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, home: Path) -> str:
    """The URL of this test's own, empty database: a SQLite file in `home` (where the settings put it), or, for
    the `[postgresql]` run of a `both_databases` test, a new PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite+aiosqlite:///{home / 'membot.db'}"
    # Asked for here, not as an argument: a run on SQLite alone never connects to PostgreSQL.
    return request.getfixturevalue("postgres_database")


@pytest.fixture
async def postgres_database(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A new database cloned from the template for this test, dropped after it."""
    if postgres.problem is not None:
        # CI runs both databases: there, a missing server is a failure, not a quiet skip.
        if os.environ.get("CI") == "true":
            pytest.fail(postgres.problem, pytrace=False)
        pytest.skip(postgres.problem)
    name = await postgres.clone()
    url = postgres.url(name)
    monkeypatch.setattr(f"{__name__}._test_postgres_url", url)
    try:
        yield url
    finally:
        await postgres.drop(name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The app's own Database over this test's database."""
    database = await Database.open(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def settings(home: Path, model: ScriptedModel, database_url: str) -> Settings:
    return make_settings(home, model, MEMBOT_DATABASE_URL=database_url)


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


async def store_messages(db: Database, *messages: Message) -> None:
    """Messages written as a step writes them (recall memory's insert), each into its own agent's memory."""

    def write(session: Session) -> None:
        for message in messages:
            RecallMemory(db, message.agent_id, TermFrequencies()).add(session, message)

    await db.write(write)
