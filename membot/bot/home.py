"""Memory files are the operator's alone: everything the process creates is private (umask), and what an
older membot left group- or world-readable is tightened at start, with one note in the log.

Only MEMBOT_HOME, its top-level entries and the known files elsewhere (a SQLite database or Milvus Lite
folder named by URL) are tightened: a private folder already closes everything under it to other
accounts, so a walk of a large Milvus folder at every start would buy nothing.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from membot.bot.errors import ConfigurationError
from membot.bot.settings import Settings

PRIVATE_UMASK = 0o077
_OTHERS = 0o077

log = logging.getLogger(__name__)


def private_umask() -> int:
    """Makes every file and folder this process (and its children) creates owner-only; returns the old mask."""
    return os.umask(PRIVATE_UMASK)


def known_files(settings: Settings) -> list[Path]:
    """The database and Milvus Lite files, wherever the settings put them, with the files kept beside them."""
    found: list[Path] = []
    try:
        url = make_url(settings.resolved_database_url)
    except ArgumentError:  # said in words when the database is opened
        url = None
    if url is not None and url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database).expanduser()
        found += [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    milvus = settings.resolved_milvus_uri
    if "://" not in milvus:  # a Milvus Lite folder, not a server
        data = Path(milvus).expanduser()
        # The text index and the shared server's record, locks and log sit beside the folder.
        found += [data, *data.parent.glob(f"{data.name}.*")]
    return found


def tighten(paths: Iterable[Path]) -> list[str]:
    """Removes group and other permissions from each existing path (folders 0700, files 0600; links are left
    alone). Returns what was changed, as "name 0644 -> 0600"; a path that cannot be changed is logged."""
    changed: list[str] = []
    for path in dict.fromkeys(paths):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not check the permissions of %s: %s", path, exc)
            continue
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OTHERS:
            continue
        mode = stat.S_IMODE(info.st_mode)
        wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        try:
            path.chmod(wanted)
        except OSError as exc:
            log.warning("could not make %s private (%s): %s", path, oct(mode)[2:], exc)
            continue
        changed.append(f"{path} {mode:04o} -> {wanted:04o}")
    return changed


def usable_home(home: Path) -> None:
    """Makes MEMBOT_HOME if missing; a home membot cannot write to stops here, in one sentence naming the variable,
    instead of as the database driver's words at the first write."""
    if home.exists() and not home.is_dir():
        raise ConfigurationError(
            f"MEMBOT_HOME ({home}) is a file, not a folder: point MEMBOT_HOME at a folder (membot makes it if missing)."
        )
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a parent folder should be
        raise ConfigurationError(
            f"MEMBOT_HOME ({home}) cannot be made: part of its path is a file. Point MEMBOT_HOME at a folder."
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"MEMBOT_HOME ({home}) cannot be made ({exc.strerror or exc}): point MEMBOT_HOME at a folder this "
            "account can write to."
        ) from None
    if not os.access(home, os.W_OK | os.X_OK):  # also False on a read-only file system, even for root
        raise ConfigurationError(
            f"MEMBOT_HOME ({home}) is read-only for this account, and membot keeps its memory there: make it "
            "writable (chmod u+w) or point MEMBOT_HOME at another folder."
        )


def read_only_files(settings: Settings) -> list[Path]:
    """The database and Milvus Lite files that exist but cannot be written: every step writes to them."""
    return [path for path in known_files(settings)
            if path.exists() and not path.is_symlink() and not os.access(path, os.W_OK)]


def secure_home(settings: Settings) -> list[str]:
    """Creates MEMBOT_HOME private if missing and tightens it, its top-level entries and the known files.
    Raises ConfigurationError, naming the variable, for a home or memory file membot cannot write."""
    home = settings.home_dir
    usable_home(home)
    stuck = read_only_files(settings)
    if stuck:
        raise ConfigurationError(
            f"{', '.join(map(str, stuck))}: read-only for this account, and membot writes its memory there. Make "
            "it writable (chmod u+w), or point MEMBOT_HOME (MEMBOT_DATABASE_URL, MEMBOT_MILVUS_URI) elsewhere."
        )
    if home.resolve() in (Path.home().resolve(), Path(home.anchor)):
        # Not a folder of membot's own: closing it, or everything in it, is not membot's call.
        log.warning("MEMBOT_HOME is %s; give membot a folder of its own so that it can keep it private", home)
        ours: list[Path] = []
    else:
        ours = [home, *sorted(home.iterdir())]
    changed = tighten([*ours, *known_files(settings)])
    if changed:
        log.warning(
            "made memory files private (they were readable by other accounts): %s", "; ".join(changed)
        )
    return changed
