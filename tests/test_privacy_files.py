"""Memory files on disk are the operator's alone: made private, and loose ones left by an older membot
tightened at start with one note saying what changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from membot.bot.home import secure_home, tighten
from tests.cli_helpers import membot
from tests.conftest import make_settings

NOTE = "made memory files private"


def _loose(home: Path) -> list[str]:
    """Everything under `home` (itself included) that another account could read or enter."""
    found = []
    for root, dirs, files in os.walk(home):
        for path in (Path(root), *(Path(root) / name for name in dirs + files)):
            if stat.S_IMODE(path.lstat().st_mode) & 0o077:
                found.append(f"{path.relative_to(home.parent)} {stat.S_IMODE(path.lstat().st_mode):04o}")
    return sorted(set(found))


async def _load(model, home: Path, tmp_path: Path) -> tuple[int, str, str]:
    notes = tmp_path / "notes.txt"
    notes.write_text("The launch code is in the blue folder.\n" * 20)
    return await membot(model, home, "load", "directory", "--name", "notes", "--input-files", str(notes))


async def test_everything_membot_creates_is_private(model, home, tmp_path):
    os.umask(0o022)  # as a typical login shell has it; the child inherits it
    code, out, err = await _load(model, home, tmp_path)
    assert code == 0, err
    assert {"membot.db", "milvus.db", "milvus.db.text.sqlite"} <= {p.name for p in home.iterdir()}
    assert _loose(home) == []
    assert NOTE not in err


async def test_loose_files_of_an_older_membot_are_tightened_once(model, home, tmp_path):
    code, _, err = await _load(model, home, tmp_path)
    assert code == 0, err
    for path in (home, home / "milvus.db"):
        path.chmod(0o755)
    (home / "membot.db").chmod(0o644)
    (home / "milvus.db" / "deep.bin").write_bytes(b"x")
    (home / "milvus.db" / "deep.bin").chmod(0o644)
    code, _, err = await membot(model, home, "sources")
    assert code == 0, err
    notes = [line for line in err.splitlines() if NOTE in line]
    assert len(notes) == 1, err
    assert "membot.db 0644 -> 0600" in notes[0] and "milvus.db 0755 -> 0700" in notes[0]
    # The folders are closed, so what is deeper (not walked) is out of other accounts' reach.
    assert _loose(home) == ["membot-home/milvus.db/deep.bin 0644"]
    assert not stat.S_IMODE(home.stat().st_mode) & 0o077
    code, _, err = await membot(model, home, "sources")
    assert code == 0 and NOTE not in err


def test_known_files_outside_the_home_are_tightened(tmp_path, model):
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    database, milvus = elsewhere / "bot.db", elsewhere / "vectors.db"
    for path in (database, database.with_name("bot.db-wal"), milvus.with_name("vectors.db.text.sqlite")):
        path.write_bytes(b"")
        path.chmod(0o644)
    milvus.mkdir(mode=0o755)
    unrelated = elsewhere / "other.txt"
    unrelated.write_text("not ours")
    unrelated.chmod(0o644)
    settings = make_settings(
        tmp_path / "home", model,
        MEMBOT_DATABASE_URL=f"sqlite+aiosqlite:///{database}", MEMBOT_MILVUS_URI=str(milvus),
    )
    changed = secure_home(settings)
    assert len(changed) == 4, changed
    for path in (database, database.with_name("bot.db-wal"), milvus.with_name("vectors.db.text.sqlite")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(milvus.stat().st_mode) == 0o700
    assert stat.S_IMODE(unrelated.stat().st_mode) == 0o644  # beside them, but not membot's
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # a folder the operator chose, left as it is
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700


def test_links_are_not_followed(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("x")
    target.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert tighten([link]) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
