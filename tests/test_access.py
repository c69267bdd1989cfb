"""The operator's allow-lists as a pure decision (membot/bot/access.py): who may talk to the bot, where, and
where it answers without a mention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from membot.bot.access import AccessPolicy, Origin, not_open_text
from membot.bot.settings import Settings

GUILD, OTHER_GUILD = "500", "600"
GENERAL, RANDOM, BOTS = "501", "502", "503"
ALICE, BOB, ADMIN = "42", "43", "7"
MODS = "900"


def policy(**lists: Any) -> AccessPolicy:
    return AccessPolicy(**{name: frozenset(values) for name, values in lists.items()})


def in_guild(user: str = ALICE, *, roles: tuple[str, ...] = (), guild: str = GUILD, channel: str = GENERAL) -> Origin:
    return Origin("discord", user, role_ids=frozenset(roles), guild_id=guild, channel_id=channel)


def discord_dm(user: str = ALICE) -> Origin:
    return Origin("discord", user, role_ids=frozenset(), guild_id=None, channel_id="9001", is_dm=True)


def slack(user: str = "U1", *, team: str = "T1", channel: str = "C1") -> Origin:
    return Origin("slack", user, role_ids=None, guild_id=team, channel_id=channel, is_dm=channel.startswith("D"))


# ----- no lists --------------------------------------------------------------------------------------------


def test_no_lists_admit_everyone_everywhere():
    open_bot = AccessPolicy()
    assert not open_bot.restricted
    for where in (in_guild(), in_guild(BOB, guild=OTHER_GUILD, channel=RANDOM), discord_dm(), slack(),
                  slack(channel="D1")):
        assert open_bot.allows(where)


# ----- person lists: alternatives --------------------------------------------------------------------------


def test_the_users_list_admits_only_the_listed_users():
    only_alice = policy(users={ALICE})
    assert only_alice.restricted
    assert only_alice.allows(in_guild(ALICE)) and only_alice.allows(discord_dm(ALICE))
    assert not only_alice.allows(in_guild(BOB)) and not only_alice.allows(discord_dm(BOB))


def test_the_roles_list_admits_holders_of_a_listed_role():
    mods = policy(roles={MODS})
    assert mods.allows(in_guild(BOB, roles=("1", MODS)))
    assert not mods.allows(in_guild(BOB, roles=("1",))) and not mods.allows(in_guild(BOB))


def test_users_and_roles_are_alternatives_either_one_admits():
    either = policy(users={ALICE}, roles={MODS})
    assert either.allows(in_guild(ALICE))  # listed, no role
    assert either.allows(in_guild(BOB, roles=(MODS,)))  # role, not listed
    assert not either.allows(in_guild(BOB, roles=("1",)))


def test_a_discord_dm_has_no_roles_so_only_the_users_list_admits_there():
    either = policy(users={ALICE}, roles={MODS})
    assert either.allows(discord_dm(ALICE)) and not either.allows(discord_dm(BOB))
    assert not policy(roles={MODS}).allows(discord_dm(BOB))


def test_slack_has_no_roles_so_a_roles_list_does_not_apply_there():
    assert policy(roles={MODS}).allows(slack("U1"))  # a Discord-only restriction leaves Slack open
    assert policy(roles={MODS}, users={"U1"}).allows(slack("U1"))
    assert not policy(roles={MODS}, users={"U1"}).allows(slack("U2"))  # the users list still applies


# ----- guild / workspace list ------------------------------------------------------------------------------


def test_the_guild_list_admits_only_listed_guilds_and_workspaces():
    here = policy(guilds={GUILD, "T1"})
    assert here.allows(in_guild(guild=GUILD)) and not here.allows(in_guild(guild=OTHER_GUILD))
    assert here.allows(slack(team="T1")) and not here.allows(slack(team="T2"))


def test_the_guild_list_does_not_apply_to_a_discord_dm_but_does_to_a_slack_dm():
    here = policy(guilds={GUILD, "T1"})
    assert here.allows(discord_dm(BOB))  # no guild to check; the person lists limit DMs
    assert here.allows(slack(channel="D1")) and not here.allows(slack(team="T2", channel="D1"))


# ----- channel list ----------------------------------------------------------------------------------------


def test_the_channel_list_admits_only_listed_channels_and_not_dms_as_channels():
    general_only = policy(channels={GENERAL, "C1"})
    assert general_only.allows(in_guild(channel=GENERAL)) and not general_only.allows(in_guild(channel=RANDOM))
    assert general_only.allows(slack(channel="C1")) and not general_only.allows(slack(channel="C2"))
    # DMs are not channels here: the channel list leaves them alone.
    assert general_only.allows(discord_dm()) and general_only.allows(slack(channel="D1"))


def test_an_open_channel_counts_as_an_allowed_one():
    lists = policy(channels={GENERAL}, open_channels={BOTS})
    assert lists.allows(in_guild(channel=BOTS)) and lists.is_open(BOTS)
    assert not lists.is_open(GENERAL) and not lists.is_open(None)
    assert not lists.allows(in_guild(channel=RANDOM))


def test_open_channels_alone_restrict_no_one():
    open_here = policy(open_channels={BOTS})
    assert not open_here.restricted
    assert open_here.allows(in_guild(channel=RANDOM)) and open_here.allows(in_guild(BOB, channel=BOTS))


def test_an_open_channel_does_not_admit_a_person_the_person_lists_refuse():
    lists = policy(users={ALICE}, open_channels={BOTS})
    assert lists.allows(in_guild(ALICE, channel=BOTS)) and not lists.allows(in_guild(BOB, channel=BOTS))


# ----- every list that is set must admit -------------------------------------------------------------------


def test_every_non_empty_list_must_admit():
    lists = policy(users={ALICE}, roles={MODS}, guilds={GUILD}, channels={GENERAL})
    assert lists.allows(in_guild(ALICE))
    assert lists.allows(in_guild(BOB, roles=(MODS,)))
    assert not lists.allows(in_guild(ALICE, guild=OTHER_GUILD))  # right person, wrong guild
    assert not lists.allows(in_guild(ALICE, channel=RANDOM))  # right person, wrong channel
    assert not lists.allows(in_guild(BOB))  # right place, wrong person
    assert lists.allows(discord_dm(ALICE)) and not lists.allows(discord_dm(BOB))


def test_a_guild_message_without_a_channel_is_refused_by_a_channel_list():
    assert not policy(channels={GENERAL}).allows(Origin("discord", ALICE, frozenset(), GUILD, None))


# ----- admins ----------------------------------------------------------------------------------------------


def test_admins_are_always_allowed_on_their_own_platform():
    lists = policy(users={ALICE}, guilds={GUILD}, channels={GENERAL}, discord_admins={ADMIN}, slack_admins={"UA"})
    assert lists.allows(in_guild(ADMIN, guild=OTHER_GUILD, channel=RANDOM)) and lists.allows(discord_dm(ADMIN))
    assert lists.allows(slack("UA", team="T9", channel="C9"))
    # An admin id counts on its own platform only.
    assert not lists.allows(slack(ADMIN)) and not lists.allows(in_guild("UA"))
    assert lists.is_admin(discord_dm(ADMIN)) and not lists.is_admin(discord_dm(ALICE))


def test_unknown_platforms_have_no_admins():
    assert not policy(users={ALICE}, discord_admins={ADMIN}).allows(Origin("terminal", ADMIN))


# ----- from settings ---------------------------------------------------------------------------------------


def test_the_policy_is_built_from_comma_separated_settings(tmp_path: Path):
    settings = Settings(
        _env_file=None, MEMBOT_HOME=str(tmp_path), MEMBOT_ALLOW_USERS="42, 43 U1", MEMBOT_ALLOW_ROLES="900",
        MEMBOT_ALLOW_GUILDS="500,T1", MEMBOT_ALLOW_CHANNELS="501", MEMBOT_OPEN_CHANNELS="503,C7",
        DISCORD_ADMIN_IDS="7", SLACK_ADMIN_IDS="UA",
    )
    assert AccessPolicy.from_settings(settings) == AccessPolicy(
        users=frozenset({"42", "43", "U1"}), roles=frozenset({"900"}), guilds=frozenset({"500", "T1"}),
        channels=frozenset({"501"}), open_channels=frozenset({"503", "C7"}), discord_admins=frozenset({"7"}),
        slack_admins=frozenset({"UA"}),
    )


def test_unset_or_empty_settings_mean_no_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEMBOT_ALLOW_USERS", "")  # empty in the environment: ignored, as every setting
    monkeypatch.setenv("MEMBOT_OPEN_CHANNELS", " , ")
    settings = Settings(_env_file=None, MEMBOT_HOME=str(tmp_path))
    assert AccessPolicy.from_settings(settings) == AccessPolicy()


def test_the_refusal_names_who_to_ask_in_the_platforms_words():
    assert "server's admins" in not_open_text("discord")
    assert "workspace's admins" in not_open_text("slack")
    assert "not open to you here" in not_open_text("discord")
