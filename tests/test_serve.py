"""`membot serve` says clearly what is missing or contradictory before starting anything."""

from __future__ import annotations

import pytest

from membot.bot.serve import ConfigurationError, configured_adapters
from membot.bot.settings import Settings


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)


def test_nothing_configured_says_what_to_set():
    with pytest.raises(ConfigurationError, match="DISCORD_TOKEN.*SLACK_BOT_TOKEN"):
        configured_adapters(settings())


def test_slack_half_configured_is_refused():
    with pytest.raises(ConfigurationError, match="SLACK_BOT_TOKEN"):
        configured_adapters(settings(SLACK_APP_TOKEN="xapp-1"))
    with pytest.raises(ConfigurationError, match="SLACK_APP_TOKEN .* or SLACK_SIGNING_SECRET"):
        configured_adapters(settings(SLACK_BOT_TOKEN="xoxb-1"))


def test_both_platforms_run_in_one_process():
    runners = configured_adapters(settings(SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", DISCORD_TOKEN="d"))
    assert set(runners) == {"discord", "slack"}


def test_admin_ids_parse_from_a_list():
    s = settings(DISCORD_ADMIN_IDS="1, 2 3", SLACK_ADMIN_IDS="UA,UB")
    assert s.discord_admin_ids == ["1", "2", "3"] and s.slack_admin_ids == ["UA", "UB"]
