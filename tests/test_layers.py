"""The layers as the design draws them: agent/ knows no platform and no bot; adapters/ hold no memory logic
and no SQL; nothing imports the entry points (the CLI, serve) back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "membot"
ENTRY_POINTS = ("membot.bot.cli", "membot.bot.serve", "membot.__main__")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("agent"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_engine_knows_no_platform_and_no_bot(path: Path):
    assert not {name for name in _imports(path)
                if name.startswith(("membot.bot", "membot.adapters", "discord", "slack_bolt", "slack_sdk"))}


@pytest.mark.parametrize("path", _modules("adapters"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_adapters_hold_no_sql_and_never_import_an_entry_point(path: Path):
    names = _imports(path)
    assert not {name for name in names if name.startswith(("sqlalchemy", "pymilvus", "membot.agent.store"))}
    assert not {name for name in names if name.startswith(ENTRY_POINTS)}


@pytest.mark.parametrize("path", [p for p in _modules("bot") if p.stem not in ("cli", "serve")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_bot_never_imports_an_entry_point(path: Path):
    assert not {name for name in _imports(path) if name.startswith(ENTRY_POINTS)}
