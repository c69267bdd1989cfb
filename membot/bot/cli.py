"""The `membot` command line. Settings are built once here and passed down."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from alembic.util import CommandError as AlembicError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from membot.agent.config import EngineConfigError
from membot.agent.store import migrate
from membot.agent.store.db import sqlite_engine
from membot.agent.store.passages import PassageStoreError
from membot.bot.configure import add_arguments as add_configure_arguments
from membot.bot.configure import run as run_configure
from membot.bot.errors import ConfigurationError
from membot.bot.home import private_umask, secure_home
from membot.bot.identity import UserRef
from membot.bot.loading import TERMINAL_SCOPE, delete_source, list_sources, load_directory
from membot.bot.log_setup import configure_logging
from membot.bot.memory_cli import add_arguments as add_memory_file_arguments
from membot.bot.memory_cli import run as run_memory_file
from membot.bot.memory_cli import user_of
from membot.bot.serve import serve
from membot.bot.service import BotService, CommandError
from membot.bot.settings import Settings
from membot.bot.version import membot_version
from membot.bot.views import memory_text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="membot", description="Persistent, self-editing memory agents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {membot_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="talk to a user's agent in the terminal")
    chat.add_argument("--user", default="default", help="whose agent (default: %(default)s)")
    chat.add_argument("--persona", help="persona for a new agent, or to switch to")
    chat.add_argument("--human", help="human template for a new agent")

    load = sub.add_parser("load", help="load files into a data source").add_subparsers(dest="kind", required=True)
    directory = load.add_parser("directory", help="files or a folder of PDF, text and Markdown files")
    directory.add_argument("--name", required=True, help="the data source to load into (created if new)")
    inputs = directory.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--input-files", nargs="+", type=Path, metavar="FILE", help="the files to load")
    inputs.add_argument("--input-dir", type=Path, metavar="DIR", help="load every supported file in this folder")
    directory.add_argument("--recursive", action="store_true", help="descend into sub-folders of --input-dir")
    directory.add_argument("--extensions", help="comma-separated, default .pdf,.txt,.md,.markdown")
    directory.add_argument("--scope", default=TERMINAL_SCOPE, help="where the source lives (default: %(default)s)")

    sources = sub.add_parser("sources", help="list data sources, or delete one")
    sources.add_argument("--scope", help="only this scope (e.g. terminal:local, discord:GUILD, slack:TEAM)")
    sources_sub = sources.add_subparsers(dest="action")
    delete = sources_sub.add_parser("delete", help="delete a source and its passages")
    delete.add_argument("name", help="the source's name, as `membot sources` lists it")
    delete.add_argument("--scope", dest="delete_scope", help=f"where the source lives (default: {TERMINAL_SCOPE})")

    sub.add_parser("serve", help="run the Discord and/or Slack adapters whose tokens are set")

    configure = sub.add_parser("configure", help="ask for the settings, try them, and write .env")
    add_configure_arguments(configure)

    discord_cmd = sub.add_parser("discord", help="Discord adapter tasks").add_subparsers(dest="action", required=True)
    sync = discord_cmd.add_parser("sync", help="register the slash commands with Discord (not done at every start)")
    sync.add_argument("--guild", type=int, metavar="ID", help="only in this guild, where they show at once")

    db = sub.add_parser("db", help="the database's schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="migrate the database to this release (membot also does it at start)")
    db.add_parser("current", help="which schema revision the database is at")

    memory = sub.add_parser("memory", help="inspect, export, import or delete an agent's memory").add_subparsers(dest="action", required=True)
    for action in ("show", "search"):
        p = memory.add_parser(action, help="show an agent's memory" if action == "show" else "search an agent's memory")
        p.add_argument("--user", required=True, help="whose agent (the name given to `membot chat --user`, or a platform id)")
        p.add_argument("--platform", default="terminal", help="terminal, discord or slack (default: terminal)")
        p.add_argument("--scope", default=None, help="guild or workspace id, for platform users")
        if action == "search":
            p.add_argument("--archival", action="store_true", help="search archival memory, not the conversation")
            p.add_argument("--limit", type=int, default=10, help="at most this many results (default: %(default)s)")
            p.add_argument("query", nargs="+", help="the words to search for")
    add_memory_file_arguments(memory)
    return parser


async def _with_service(settings: Settings, work: Callable[[BotService], Awaitable[int | None]]) -> int:
    service = await BotService.open(settings)
    try:
        return await work(service) or 0
    finally:
        await service.close()


async def _discord_sync(settings: Settings, guild: int | None) -> int:
    from membot.adapters.discord.runner import sync_commands

    names = await sync_commands(settings, guild)
    where = f"in guild {guild}" if guild else "globally"
    print(f"Synced {len(names)} commands {where}: {', '.join('/' + name for name in names)}")
    return 0


async def _memory(service: BotService, args: argparse.Namespace) -> int:
    if args.action in ("export", "import", "forget"):
        return await run_memory_file(service, args)
    user = user_of(args)
    if args.action == "show":
        # The shell is an admin's seat: it sees any agent but creates none.
        admin = UserRef("cli", "local", "admin")
        print(memory_text(await service.memory(admin, user, is_admin=True)))
        return 0
    query = " ".join(args.query)
    lines = await service.search_memory(user, query, archival=args.archival, limit=max(1, args.limit))
    if not lines:  # said, so that an empty answer is not taken for a failure
        where = "archival memory" if args.archival else "conversation"
        print(f"Nothing in {args.user}'s {where} matches {query!r}.")
    for line in lines:
        print(line)
    return 0


def _db(settings: Settings, action: str) -> int:
    try:
        url = make_url(settings.resolved_database_url)
        where = url.render_as_string(hide_password=True)
        sqlite = url.get_backend_name() == "sqlite"
        if sqlite and url.database and not Path(url.database).expanduser().exists():
            if action == "current":  # connecting would make the file
                print(f"{where}: empty (no file yet)")
                return 0
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sqlite_engine(settings.resolved_database_url) if sqlite else create_async_engine(url)
    except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        problem = f"MEMBOT_DATABASE_URL is not usable ({exc.__class__.__name__}: {exc})"
        raise EngineConfigError(problem) from None
    return asyncio.run(_db_action(engine, where, action))


async def _db_action(engine: AsyncEngine, where: str, action: str) -> int:
    try:
        before = await migrate.current(engine)
        if action == "upgrade":
            await migrate.upgrade(engine)
            after = await migrate.current(engine)
            print(f"{where}: {after}, already up to date" if after == before
                  else f"{where}: upgraded to {after} (from {before or 'no revision'})")
        elif before is not None:
            newest = "" if before == migrate.head() else f" (this membot's newest is {migrate.head()})"
            print(f"{where}: {before}{newest}")
        elif await migrate.unversioned(engine):
            print(f"{where}: not under migrations (made by an older membot; `membot db upgrade` adopts it)")
        else:
            print(f"{where}: empty")
        return 0
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc  # the driver's words, without SQLAlchemy's link
        raise EngineConfigError(f"Could not use the database at {where}: {reason}") from None
    except AlembicError as exc:  # a revision this membot does not know: a newer one migrated it
        raise EngineConfigError(f"The database at {where} was migrated by a newer membot ({exc})") from None
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    private_umask()  # before anything is created: every file of this process and its children is private
    args = _parser().parse_args(argv)
    configure_logging(args.command, args.verbose)
    if args.command == "configure":  # before Settings(): it is how a broken .env gets fixed
        return run_configure(args)
    try:
        settings = Settings()
    except ValidationError as exc:
        # A mistyped variable (MEMBOT_CONTEXT_WINDOW=lots) gets one line per problem, not a traceback.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"membot: bad configuration: {problems}", file=sys.stderr)
        return 2
    try:
        secure_home(settings)
    except ConfigurationError as exc:
        print(f"membot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"membot: MEMBOT_HOME ({settings.home_dir}) is not usable ({exc.strerror or exc}): point MEMBOT_HOME "
              "at a folder this account can write to.", file=sys.stderr)
        return 2
    try:
        if args.command == "chat":
            from membot.adapters.terminal import run_chat

            return asyncio.run(
                _with_service(settings, lambda s: run_chat(s, args.user, args.persona, args.human))
            )
        if args.command == "load":
            return asyncio.run(
                _with_service(
                    settings,
                    lambda s: load_directory(
                        s, args.name, args.input_files, args.input_dir,
                        recursive=args.recursive, extensions=args.extensions, scope=args.scope,
                    ),
                )
            )
        if args.command == "sources":
            if args.action == "delete":
                return asyncio.run(_with_service(settings, lambda s: delete_source(s, args.name, args.delete_scope or args.scope or TERMINAL_SCOPE)))
            return asyncio.run(_with_service(settings, lambda s: list_sources(s, args.scope)))
        if args.command == "serve":
            return asyncio.run(serve(settings))
        if args.command == "discord":
            return asyncio.run(_discord_sync(settings, args.guild))
        if args.command == "db":
            return _db(settings, args.action)
        if args.command == "memory":
            return asyncio.run(_with_service(settings, lambda s: _memory(s, args)))
    # ConnectionError: a platform that cannot be reached (e.g. `discord sync`), already said in words.
    except (CommandError, PassageStoreError, ConfigurationError, EngineConfigError, ConnectionError) as exc:
        print(f"membot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
