"""`membot memory export | import | forget`: a user's memory as a file, and its deletion, from the shell.

The shell is the operator's seat (as for `memory show`): it may export or delete any user's agent. Parsed here
and run over the bot service, so the CLI itself only wires the subcommands in.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from membot.bot.identity import UserRef
from membot.bot.service import BotService, CommandError

#: Who the shell is when it acts on someone's memory: an operator, as for `memory show`.
SHELL = UserRef("cli", "local", "admin", "the shell")


def add_arguments(memory: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The three subcommands, under `membot memory`."""
    export = memory.add_parser("export", help="write everything a user's agent holds to one JSON file")
    _who(export, required=True)
    export.add_argument("output", nargs="?", help="the file to write (default: a new file here named after "
                        "the user and the time; - for stdout)")

    restore = memory.add_parser("import", help="restore an export as a user's agent (here or on another deployment)")
    restore.add_argument("file", type=Path, help="a file written by /memory export or `membot memory export`")
    _who(restore, required=False)
    restore.add_argument("--replace", action="store_true",
                         help="replace the agent the user has already (its memory is deleted)")

    forget = memory.add_parser("forget", help="delete a user's agent and everything it holds")
    _who(forget, required=True)
    forget.add_argument("--yes", action="store_true", help="do not ask for a confirmation")


def _who(parser: argparse.ArgumentParser, *, required: bool) -> None:
    default = "" if required else " (default: the user it was exported from)"
    parser.add_argument("--user", required=required, help=f"whose agent: their user id{default}")
    parser.add_argument("--platform", default=None, help="terminal, discord or slack (default: terminal"
                        + (", or the export's" if not required else "") + ")")
    parser.add_argument("--scope", default=None, help="guild or workspace id, for platform users")


def user_of(args: argparse.Namespace) -> UserRef:
    """The user a shell command names (--platform, --scope, --user): a terminal user by default."""
    platform = args.platform or "terminal"
    scope = args.scope if args.scope is not None else ("local" if platform == "terminal" else "")
    return UserRef(platform, scope, args.user, args.user)


async def run(service: BotService, args: argparse.Namespace) -> int:
    if args.action == "export":
        return await _export(service, args)
    if args.action == "import":
        return await _import(service, args)
    return await _forget(service, args)


async def _export(service: BotService, args: argparse.Namespace) -> int:
    name, raw = await service.export_memory(SHELL, user_of(args), is_admin=True)
    if args.output == "-":
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return 0
    path = Path(args.output or name)
    try:
        await asyncio.to_thread(path.write_bytes, raw)
    except OSError as exc:
        raise CommandError(f"Could not write {path}: {exc.strerror or exc}; name another file.") from None
    print(f"Wrote the memory of {args.user} to {path} ({len(raw):,} bytes).", file=sys.stderr)
    return 0


async def _import(service: BotService, args: argparse.Namespace) -> int:
    try:
        raw = await asyncio.to_thread(args.file.read_bytes)
    except OSError as exc:
        raise CommandError(f"Could not read {args.file}: {exc.strerror or exc}.") from None
    user = None
    if args.user is not None:
        user = user_of(args)
    elif args.platform is not None or args.scope is not None:
        raise CommandError("Name the user with --user when you give --platform or --scope.")
    print(await service.import_memory(raw, user, replace=args.replace))
    return 0


async def _forget(service: BotService, args: argparse.Namespace) -> int:
    user = user_of(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError("Deleting an agent asks for a confirmation; add --yes when nobody can answer.")
        question = (f"Delete the agent of {user.user_id} and everything it holds? This cannot be undone. "
                    f"Type {user.user_id} to confirm: ")
        answer = await asyncio.to_thread(input, question)
        if answer.strip() != user.user_id:
            print("Nothing was deleted.", file=sys.stderr)
            return 1
    print(await service.forget(SHELL, user, is_admin=True))
    return 0
