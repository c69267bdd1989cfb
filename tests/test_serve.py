"""`membot serve` says clearly what is missing or contradictory before starting anything."""

from __future__ import annotations

import pytest

from membot.bot.errors import ConfigurationError
from membot.bot.serve import configured_adapters
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


def test_bad_settings_get_one_clear_line(monkeypatch, capsys, tmp_path):
    from membot.bot.cli import main

    monkeypatch.setenv("MEMBOT_HOME", str(tmp_path))
    monkeypatch.setenv("MEMBOT_CONTEXT_WINDOW", "lots")
    assert main(["memory", "show", "--user", "x"]) == 2
    err = capsys.readouterr().err
    assert "MEMBOT_CONTEXT_WINDOW" in err and "Traceback" not in err
    monkeypatch.delenv("MEMBOT_CONTEXT_WINDOW")
    for url in ("postgresql://u@h/db", "nonsense", f"sqlite+aiosqlite:///{tmp_path}/file.txt/x.db"):
        if "file.txt" in url:
            (tmp_path / "file.txt").write_text("not a folder")
        monkeypatch.setenv("MEMBOT_DATABASE_URL", url)
        assert main(["memory", "show", "--user", "x"]) == 2, url
        assert "MEMBOT_DATABASE_URL" in capsys.readouterr().err
