"""Prompt texts shipped with membot: the system prompt, personas and human templates (text files)."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class UnknownPrompt(LookupError):
    pass


def _folder(kind: str) -> resources.abc.Traversable:
    return resources.files(__name__).joinpath(kind)


# Where the model is told to think, by EngineConfig.inner_thoughts.
THINKING = {
    "arguments": "Think in each call's inner_thoughts: private, short, first person.",
    "content": "Your reply's text is your inner monologue: private, short, first person.",
}


def system_prompt(inner_thoughts: str = "arguments") -> str:
    text = resources.files(__name__).joinpath("system.txt").read_text(encoding="utf-8").strip()
    return text.replace("{thinking}", THINKING[inner_thoughts])


def available(kind: str) -> list[str]:
    """Names of the shipped personas (kind="personas") or humans (kind="humans")."""
    return sorted(p.name[:-4] for p in _folder(kind).iterdir() if p.name.endswith(".txt"))


def load(kind: str, name: str) -> str:
    if not _NAME.match(name or "") or name not in available(kind):
        choices = ", ".join(available(kind))
        what = "persona" if kind == "personas" else "human"
        raise UnknownPrompt(f"There is no {what} called {name[:64]!r}; choose one of: {choices}.")
    return _folder(kind).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()
