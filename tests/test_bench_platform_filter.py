"""`python -m bench platform` runs a part of itself when told to by the environment (bench/platform.py)."""

from __future__ import annotations

import pytest

from bench.platform import Only


def test_the_platform_bench_runs_only_the_groups_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENCH_PLATFORM_ONLY", "BENCH_PLATFORM_USERS", "BENCH_PLATFORM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    everything = Only.from_env()
    assert everything.platform("Slack") and everything.model("streamed") and everything.sizes((12, 50)) == (12, 50)
    monkeypatch.setenv("BENCH_PLATFORM_ONLY", "discord")
    monkeypatch.setenv("BENCH_PLATFORM_USERS", "50")
    monkeypatch.setenv("BENCH_PLATFORM_MODEL", "1000, streamed")
    only = Only.from_env()
    assert only.platform("Discord") and not only.platform("Slack")
    assert only.sizes((12, 50)) == (50,)
    assert only.model("1000") and only.model("streamed") and not only.model("0")
