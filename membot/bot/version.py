"""The installed membot's version, for `membot --version` and bug reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def membot_version() -> str:
    """The version pip installed; a checkout run without installing has none to tell."""
    try:
        return version("membot")
    except PackageNotFoundError:
        return "(not installed: run `pip install -e .` in the checkout)"
