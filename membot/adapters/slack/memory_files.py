"""`/memory export [@user]` and `/forget [@user] [confirm]` on Slack: the parts that are not the commands'
plumbing. The export goes up as a file into the requester's IM with the bot (files_upload_v2): only they see
it. Operators (SLACK_ADMIN_IDS) may name another user."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
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
        raise CommandError(refused(what))
    found = await people.lookup(client, user_id)
    name = found.name if found.name != user_id else typed or user_id
    return UserRef(PLATFORM, requester.scope, user_id, name)


def refused(what: str) -> str:
    return f"Only the bot's operators (SLACK_ADMIN_IDS) can {what} another user's memory."


async def upload(client: AsyncWebClient, channel: str, name: str, raw: bytes, comment: str) -> None:
    """The file, into `channel` (the requester's IM with the bot). A refusal is said plainly: most often the app
    lacks the files:write scope."""
    try:
        await client.files_upload_v2(channel=channel, file=raw, filename=name, title=name, initial_comment=comment)
    except SlackApiError as exc:
        why = exc.response.get("error", "refused")
        hint = " The app needs the files:write scope (OAuth & Permissions), then a reinstall." if why in (
            "missing_scope", "not_allowed_token_type") else ""
        raise CommandError(f"Slack refused the export file ({why}).{hint} An operator can also run "
                           "`membot memory export`.") from None
