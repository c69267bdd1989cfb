"""`membot configure`: asks for what a first run needs, tries each part, and writes `.env` (mode 0600).

Three parts, kept apart: the `.env` file (read, merge, write, mask: pure, no terminal), the checks (one small
request each, through membot's own clients), and the questions (a terminal, or flags with --non-interactive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import os
import re
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dotenv import dotenv_values

if TYPE_CHECKING:
    from membot.agent.config import EngineConfig
    from membot.agent.llm.endpoint import Endpoint

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------------------
# The settings it asks for (names as in .env.example and settings.py), and their flags.


@dataclass(frozen=True)
class Setting:
    var: str
    flag: str
    help: str
    secret: bool = False


SETTINGS = (
    Setting("OPENAI_BASE_URL", "--base-url", "model endpoint; empty for OpenAI itself"),
    Setting("OPENAI_API_KEY", "--api-key", "the endpoint's API key", secret=True),
    Setting("MEMBOT_MODEL", "--model", "chat model"),
    Setting("MEMBOT_EMBEDDING_MODEL", "--embedding-model", "embedding model"),
    Setting("MEMBOT_EMBEDDING_DIM", "--embedding-dim", "embedding dimension"),
    Setting("MEMBOT_HOME", "--home", "folder for the SQLite file, Milvus Lite and sandboxes"),
    Setting("MEMBOT_DATABASE_URL", "--database-url", "postgresql+asyncpg://… ; empty for SQLite in MEMBOT_HOME"),
    Setting("MEMBOT_MILVUS_URI", "--milvus-uri", "Milvus Lite file or server URI; empty for MEMBOT_HOME/milvus.db"),
    Setting("MEMBOT_MILVUS_TOKEN", "--milvus-token", "token for a Milvus server", secret=True),
    Setting("DISCORD_TOKEN", "--discord-token", "Discord bot token", secret=True),
    Setting("DISCORD_MONOLOGUE_CHANNEL_ID", "--discord-monologue-channel", "Discord channel id for the monologue"),
    Setting("SLACK_BOT_TOKEN", "--slack-bot-token", "Slack bot token (xoxb-…)", secret=True),
    Setting("SLACK_APP_TOKEN", "--slack-app-token", "Slack app token (xapp-…), Socket Mode", secret=True),
    Setting("SLACK_SIGNING_SECRET", "--slack-signing-secret", "Slack signing secret, HTTP mode", secret=True),
    Setting("SLACK_MONOLOGUE_CHANNEL", "--slack-monologue-channel", "Slack channel for the monologue"),
)
SECRETS = frozenset(s.var for s in SETTINGS if s.secret) | {"AZURE_OPENAI_API_KEY"}
DEFAULTS = {
    "MEMBOT_MODEL": "gpt-4o-mini",
    "MEMBOT_EMBEDDING_MODEL": "text-embedding-3-small",
    "MEMBOT_EMBEDDING_DIM": "1536",
    "MEMBOT_HOME": "~/.membot",
}

# ---------------------------------------------------------------------------------------------------------------
# The .env file: pure.

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_BARE = re.compile(r"^[A-Za-z0-9_./:@+,~%?&=-]*$")
HEADER = "# Written by `membot configure`; every setting is described in .env.example.\n"


def parse_env(text: str) -> dict[str, str]:
    """The values set in a .env text, read as pydantic-settings reads them (python-dotenv)."""
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def quote(value: str) -> str:
    """A value as a .env line holds it: bare when it can be, else double-quoted (dotenv's escapes)."""
    if _BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def merge_env(text: str, changes: Mapping[str, str | None]) -> str:
    """`text` with `changes` applied: a changed variable is rewritten where it stands, None removes it, a new one
    goes at the end; comments and every other line stay as they were."""
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines(keepends=True):
        match = _ASSIGNMENT.match(line)
        name = match.group(1) if match else None
        if name is None or name not in changes:
            out.append(line)
            continue
        value = changes[name]
        if value is not None and name not in done:  # a repeated assignment is dropped: one value, one line
            out.append(f"{name}={quote(value)}\n")
        done.add(name)
    new = [f"{name}={quote(value)}\n" for name, value in changes.items() if value is not None and name not in done]
    if new:
        if not out:
            out.append(HEADER)
        elif not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.extend(new)
    return "".join(out)


def write_env(path: Path, text: str) -> None:
    """Write atomically (a temporary file beside it, renamed over it), readable by its owner only."""
    path = path.resolve()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def mask(name: str, value: str) -> str:
    """How a current value is shown: a secret as `sk-…1234`, a URL without its password."""
    if not value:
        return "not set"
    if name in SECRETS:
        return f"{value[:3]}…{value[-4:]}" if len(value) >= 12 else "set, hidden"
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", value)


def changes_between(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str | None]:
    """What to write: every variable whose value changed; an emptied one is removed."""
    names = [s.var for s in SETTINGS] + [n for n in after if n not in {s.var for s in SETTINGS}]
    changed: dict[str, str | None] = {}
    for name in names:
        old, new = before.get(name, ""), after.get(name, "")
        if old != new:
            changed[name] = new or None
    return changed


# ---------------------------------------------------------------------------------------------------------------
# The checks: each returns what a user reads; none raises for a failure it can name.


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str
    #: False for what `membot serve` will retry anyway (a platform out of reach).
    fatal: bool = True


def _settings(values: Mapping[str, str]) -> Any:
    from membot.bot.settings import Settings

    # A quick answer or a clear failure: no retries, a short wait.
    tried = {k: v for k, v in values.items() if v} | {"MEMBOT_MODEL_MAX_RETRIES": "0", "MEMBOT_MODEL_TIMEOUT": "20"}
    return Settings(_env_file=None, **tried)


def _bad_values(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


@contextlib.asynccontextmanager
async def _endpoints(values: Mapping[str, str]) -> AsyncIterator[tuple[EngineConfig, Endpoint, Endpoint]]:
    """The engine config and its chat and embedding endpoints, closed after; EngineConfigError or ValueError
    when the values do not make a config."""
    from membot.agent.llm.endpoint import open_endpoints

    config = _settings(values).engine_config()
    chat, embed = open_endpoints(config)
    try:
        yield config, chat, embed
    finally:
        await chat.close()
        if embed is not chat:
            await embed.close()


async def check_model(values: Mapping[str, str]) -> Outcome:
    import openai

    from membot.agent.config import EngineConfigError
    from membot.agent.llm.trouble import Asked, explain

    try:
        async with _endpoints(values) as (config, chat, _):
            body = {"model": config.model, "messages": [{"role": "user", "content": "Say OK."}]}
            try:
                await chat.post("/chat/completions", body)
            except openai.OpenAIError as exc:
                return Outcome(False, str(explain(exc, chat, Asked("model", config.model, "MEMBOT_MODEL"))))
            return Outcome(True, f"{config.model} at {chat.url} answered")
    except (EngineConfigError, ValueError) as exc:
        return Outcome(False, _bad_values(exc))


async def check_embeddings(values: Mapping[str, str]) -> Outcome:
    from membot.agent.config import EngineConfigError
    from membot.agent.llm.embeddings import Embedder
    from membot.agent.llm.errors import ModelUnavailable

    try:
        async with _endpoints(values) as (config, _, embed):
            try:
                await Embedder(embed, config.embedding_model, config.embedding_dim).embed_one("hello")
            except ModelUnavailable as exc:
                return Outcome(False, str(exc))
            return Outcome(True, f"{config.embedding_model} gives {config.embedding_dim}-dimensional vectors")
    except (EngineConfigError, ValueError) as exc:
        return Outcome(False, _bad_values(exc))


async def check_database(values: Mapping[str, str]) -> Outcome:
    from membot.agent.config import EngineConfigError
    from membot.agent.store.db import Database

    url = _settings(values).resolved_database_url
    shown = mask("MEMBOT_DATABASE_URL", url)
    try:
        db = await asyncio.wait_for(Database.open(url), timeout=20)  # opening also migrates
    except EngineConfigError as exc:
        return Outcome(False, str(exc))
    except TimeoutError:
        return Outcome(False, f"The database at {shown} did not answer within 20 s.")
    await db.close()
    return Outcome(True, f"the database at {shown} is ready")


def _in_thread(work: Callable[[], T], timeout: float) -> Coroutine[Any, Any, T]:
    """`work` in a daemon thread: a client stuck connecting is left behind, not waited for at exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(lambda: future.done() or outcome())
        except RuntimeError:  # the loop is gone: nobody waits for this answer any more
            pass

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
            settle(lambda: future.set_exception(error))
        else:
            settle(lambda: future.set_result(result))

    threading.Thread(target=run, daemon=True, name="membot-configure-check").start()
    return asyncio.wait_for(future, timeout)


def _lite_folder(uri: str) -> Outcome:
    """Milvus Lite makes its file at start; its folder must take it (a quick local look, no thread needed)."""
    import importlib.util

    folder = Path(uri).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Outcome(False, f"Cannot make the folder {folder} for Milvus Lite: {exc.strerror}.")
    if not os.access(folder, os.W_OK):
        return Outcome(False, f"The folder {folder} is not writable: Milvus Lite cannot keep {uri} there.")
    if importlib.util.find_spec("milvus_lite") is None:
        return Outcome(False, "Milvus Lite is not installed (pip install 'pymilvus[milvus-lite]').")
    return Outcome(True, f"Milvus Lite can keep its file at {uri}")


async def check_milvus(values: Mapping[str, str]) -> Outcome:
    settings = _settings(values)
    uri = settings.resolved_milvus_uri
    if "://" not in uri:
        return _lite_folder(uri)
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""

    def collections() -> list[str]:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=uri, token=token, timeout=8)
        try:
            return list(client.list_collections())
        finally:
            client.close()

    try:
        found = await _in_thread(collections, timeout=10)
    except TimeoutError:
        return Outcome(False, f"The Milvus server at {uri} did not answer within 10 s (MEMBOT_MILVUS_URI).")
    except Exception as exc:  # pymilvus's errors share no base class worth naming
        said = getattr(exc, "message", None) or str(exc)  # a MilvusException's own words, without its repr
        return Outcome(False, f"Could not use the Milvus server at {uri} (MEMBOT_MILVUS_URI): {said}")
    return Outcome(True, f"the Milvus server at {uri} answered ({len(found)} collections)")


async def _platform_call(method: str, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.request(method, url, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def check_discord(values: Mapping[str, str]) -> Outcome:
    settings = _settings(values)
    base = (settings.discord_api_url or "https://discord.com/api/v10").rstrip("/")
    headers = {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}
    try:
        status, body = await _platform_call("GET", f"{base}/users/@me", headers)
    except Exception as exc:  # unreachable here is not unusable later: `membot serve` retries
        return Outcome(False, f"Could not reach Discord to try DISCORD_TOKEN ({exc.__class__.__name__}); kept untried.", fatal=False)
    if status == 200 and isinstance(body, dict):
        return Outcome(True, f"Discord knows the bot as {body.get('username', '?')}")
    return Outcome(False, f"Discord refused DISCORD_TOKEN (HTTP {status}): copy it again from the Developer Portal.")


async def check_slack(values: Mapping[str, str]) -> Outcome:
    settings = _settings(values)
    base = (settings.slack_api_url or "https://slack.com/api/").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.slack_bot_token.get_secret_value()}"}
    try:
        status, body = await _platform_call("POST", f"{base}/auth.test", headers)
    except Exception as exc:  # as for Discord: reported, not fatal
        return Outcome(False, f"Could not reach Slack to try SLACK_BOT_TOKEN ({exc.__class__.__name__}); kept untried.", fatal=False)
    if isinstance(body, dict) and body.get("ok"):
        return Outcome(True, f"Slack knows the bot as {body.get('user', '?')} in {body.get('team', '?')}")
    reason = body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}"
    return Outcome(False, f"Slack refused SLACK_BOT_TOKEN ({reason}).")


Check = Callable[[Mapping[str, str]], Coroutine[Any, Any, Outcome]]
# Each part a user sets and the check that tries it; the platforms only when their token is set.
CHECKS: dict[str, Check] = {
    "model": check_model,
    "embeddings": check_embeddings,
    "database": check_database,
    "archival store": check_milvus,
    "Discord": check_discord,
    "Slack": check_slack,
}
_NEEDS = {"Discord": "DISCORD_TOKEN", "Slack": "SLACK_BOT_TOKEN"}


def applies(part: str, values: Mapping[str, str]) -> bool:
    return part not in _NEEDS or bool(values.get(_NEEDS[part]))


def attempt(part: str, values: Mapping[str, str]) -> Outcome:
    """Run one part's check; a value the settings refuse (MEMBOT_EMBEDDING_DIM=abc) is its failure."""
    try:
        return asyncio.run(CHECKS[part](values))
    except ValueError as exc:
        return Outcome(False, _bad_values(exc))


def _outcome_line(part: str, outcome: Outcome) -> str:
    return f"  ✓ {part}: {outcome.text}" if outcome.ok else f"  ✗ {part}: {outcome.text}"


# ---------------------------------------------------------------------------------------------------------------
# The questions.


class Prompter(Protocol):
    def ask(self, question: str) -> str: ...
    def secret(self, question: str) -> str: ...
    def say(self, text: str) -> None: ...


class Console:
    """A terminal: answers read with input(), secrets with getpass (not echoed)."""

    def ask(self, question: str) -> str:
        return input(question)

    def secret(self, question: str) -> str:
        return getpass.getpass(question)

    def say(self, text: str) -> None:
        print(text, flush=True)


class Questions:
    """The interactive run: each answer lands in `values`; Enter keeps a value, `-` clears it."""

    def __init__(self, io: Prompter, values: dict[str, str], check: bool) -> None:
        self.io, self.values, self.check = io, values, check

    def value(self, var: str, label: str, *, hint: str = "", integer: bool = False) -> None:
        current = self.values.get(var, "")
        shown = mask(var, current) if current else DEFAULTS.get(var, hint or "not set")
        while True:
            question = f"  {label} [{shown}]: "
            answer = (self.io.secret(question) if var in SECRETS else self.io.ask(question)).strip()
            if answer == "-":
                self.values.pop(var, None)
                return
            if not answer:
                return
            if integer and not answer.isdigit():
                self.io.say("    A whole number, please.")
                continue
            self.values[var] = answer
            return

    def yes(self, question: str, default: bool) -> bool:
        answer = self.io.ask(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
        return default if not answer else answer.startswith("y")

    def tried(self, part: str, ask: Callable[[], None]) -> None:
        """Ask, try, and on a failure offer to keep the answers or give them again."""
        while True:
            ask()
            if not self.check:
                return
            outcome = attempt(part, self.values)
            self.io.say(_outcome_line(part, outcome))
            if outcome.ok or not outcome.fatal or self.yes("  Keep these settings anyway?", False):
                return

    def model(self) -> None:
        self.io.say("The model: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LM Studio…). '-' clears a value.")
        self.value("OPENAI_BASE_URL", "Endpoint URL", hint="OpenAI")
        self.value("OPENAI_API_KEY", "API key (not shown as you type)")
        self.value("MEMBOT_MODEL", "Chat model")

    def embeddings(self) -> None:
        self.io.say("Embeddings, for archival memory and data sources.")
        self.value("MEMBOT_EMBEDDING_MODEL", "Embedding model")
        self.value("MEMBOT_EMBEDDING_DIM", "Dimension", integer=True)

    def database(self) -> None:
        self.io.say("Storage: a SQLite file in MEMBOT_HOME, or a PostgreSQL URL (postgresql+asyncpg://user:pw@host/db).")
        self.value("MEMBOT_HOME", "Home folder")
        self.value("MEMBOT_DATABASE_URL", "Database URL", hint="SQLite in the home folder")

    def milvus(self) -> None:
        self.io.say("Archival store: a Milvus Lite file, or a Milvus server URI (http://host:19530).")
        self.value("MEMBOT_MILVUS_URI", "Milvus", hint="milvus.db in the home folder")
        if "://" in self.values.get("MEMBOT_MILVUS_URI", ""):
            self.value("MEMBOT_MILVUS_TOKEN", "Milvus token (not shown)", hint="none")

    def discord(self) -> None:
        self.value("DISCORD_TOKEN", "Discord bot token (not shown)")
        self.value("DISCORD_MONOLOGUE_CHANNEL_ID", "Monologue channel id", hint="none", integer=True)

    def slack(self) -> None:
        self.value("SLACK_BOT_TOKEN", "Slack bot token, xoxb-… (not shown)")
        if self.values.get("SLACK_SIGNING_SECRET") and not self.values.get("SLACK_APP_TOKEN"):
            socket_mode = self.yes("  Switch to Socket Mode (an app token, no public URL)?", False)
        else:
            socket_mode = self.yes("  Socket Mode (an app token, no public URL needed)?", True)
        if socket_mode:
            self.value("SLACK_APP_TOKEN", "App token, xapp-… (not shown)")
        else:
            self.value("SLACK_SIGNING_SECRET", "Signing secret (not shown)")
        self.value("SLACK_MONOLOGUE_CHANNEL", "Monologue channel", hint="none")

    def run(self) -> None:
        self.tried("model", self.model)
        self.tried("embeddings", self.embeddings)
        self.tried("database", self.database)
        self.tried("archival store", self.milvus)
        for part, ask in (("Discord", self.discord), ("Slack", self.slack)):
            have = applies(part, self.values)
            if self.yes(f"{part} is set up; change it?" if have else f"Set up {part}?", False):
                self.tried(part, ask)


# ---------------------------------------------------------------------------------------------------------------
# The command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="the file to write (default: %(default)s)")
    parser.add_argument("--non-interactive", action="store_true", help="ask nothing: take the flags, keep the rest")
    parser.add_argument("--skip-checks", action="store_true", help="write without trying the settings")
    for setting in SETTINGS:
        parser.add_argument(setting.flag, dest=setting.var, metavar="VALUE", help=f"{setting.help} ('' clears it)")


def _environment_notes(changed: Mapping[str, str | None]) -> list[str]:
    # The process environment wins over .env: a value written there would not be the one used.
    shadowed = [name for name in changed if os.environ.get(name)]
    return [f"Note: {name} is also set in the environment, which takes precedence over the file." for name in shadowed]


def run(args: argparse.Namespace, io: Prompter | None = None) -> int:
    path: Path = args.env_file
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except OSError as exc:
        print(f"membot: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    before = parse_env(text)
    values = dict(before)
    for setting in SETTINGS:
        given = getattr(args, setting.var, None)
        if given is not None:
            values[setting.var] = given.strip()
    io = io or Console()
    if args.non_interactive:
        if not args.skip_checks:
            failed = False
            for part in CHECKS:
                if applies(part, values):
                    outcome = attempt(part, values)
                    io.say(_outcome_line(part, outcome))
                    failed |= not outcome.ok and outcome.fatal
            if failed:
                print(f"membot: nothing written to {path}; fix the settings above, or pass --skip-checks.",
                      file=sys.stderr)
                return 1
    else:
        io.say(f"Settings for membot, written to {path.resolve()}. Enter keeps the value in brackets.")
        try:
            Questions(io, values, check=not args.skip_checks).run()
        except (EOFError, KeyboardInterrupt):
            io.say("")
            print(f"membot: stopped; nothing written to {path}.", file=sys.stderr)
            return 130
    changed = changes_between(before, {k: v for k, v in values.items() if v})
    if not changed:
        io.say(f"Nothing changed in {path}.")
        return 0
    try:
        write_env(path, merge_env(text, changed))
    except OSError as exc:
        print(f"membot: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    names = ", ".join(sorted(changed))
    io.say(f"Wrote {path} (only you can read it): {names}.")
    for note in _environment_notes(changed):
        io.say(note)
    return 0
