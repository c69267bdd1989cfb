"""`/memory export [@user]` and `/forget [@user] [confirm]` on Slack: the parts that are not the commands'
plumbing. The export goes up as a file into the requester's IM with the bot (files_upload_v2): only they see
it. Operators (SLACK_ADMIN_IDS) may name another user."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.slack.people import PLATFORM, People
from membot.adapters.slack.render import parse_user_arg
from membot.bot.identity import UserRef
from membot.bot.service import CommandError

EXPORT_USAGE = "Usage: `/memory export` for your agent's memory as a file, or `/memory export @someone` (operators)."
FORGET_USAGE = "Usage: `/forget`, then `/forget confirm` to delete your agent; operators: `/forget @someone confirm`."


def split_confirm(text: str) -> tuple[str, bool]:
    """`/forget`'s text: (the user named, if any; whether it ends with `confirm`)."""
    words = text.split()
    confirmed = bool(words) and words[-1].lower() == "confirm"
    return " ".join(words[:-1] if confirmed else words), confirmed


async def target(people: People, client: AsyncWebClient, requester: UserRef, arg: str, usage: str,
                 what: str) -> UserRef | None:
    """The user `arg` names (None: the requester); only an operator may name someone else, checked here before
    anything of theirs is read."""
    if not arg:
        return None
    parsed = parse_user_arg(arg)
    if parsed is None:
        raise CommandError(usage)
    user_id, typed = parsed
    if user_id == requester.user_id:
        return None
    if not people.is_admin(requester.user_id):
        raise CommandError(f"Only the bot's operators (SLACK_ADMIN_IDS) can {what} another user's memory.")
    found = await people.lookup(client, user_id)
    name = found.name if found.name != user_id else typed or user_id
    return UserRef(PLATFORM, requester.scope, user_id, name)


def forget_warning(whose: str, again: str) -> str:
    return (f"This deletes {whose} and everything it holds: core memory, every message, its archival passages, "
            "reminders and files. It cannot be undone (`/memory export` first keeps a copy). "
            f"To go ahead: `{again}`")


async def upload(client: AsyncWebClient, channel: str, name: str, raw: bytes, comment: str) -> None:
    """The file, into `channel` (the requester's IM with the bot)."""
    await client.files_upload_v2(channel=channel, file=raw, filename=name, title=name, initial_comment=comment)
