"""Core memory: the `persona` and `human` blocks held in the prompt. Pure logic, no I/O.

A write that would pass a block's limit is refused with a message that says the limit and the current size;
nothing is ever cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK_LABELS = ("persona", "human")


class CoreMemoryError(ValueError):
    """An edit the model asked for that cannot be made; its message goes back to the model."""


@dataclass
class Block:
    label: str
    value: str
    limit: int

    @property
    def size(self) -> int:
        return len(self.value)


@dataclass
class CoreMemory:
    blocks: dict[str, Block] = field(default_factory=dict)

    @classmethod
    def new(cls, persona: str, human: str, limit: int) -> CoreMemory:
        return cls({"persona": Block("persona", persona, limit), "human": Block("human", human, limit)})

    def block(self, name: str) -> Block:
        if name not in self.blocks:
            raise CoreMemoryError(f"There is no core memory block named {name!r}; use one of: {', '.join(self.blocks)}.")
        return self.blocks[name]

    def _check(self, block: Block, new_value: str) -> None:
        if len(new_value) > block.limit:
            raise CoreMemoryError(
                f"Edit refused: block {block.label!r} would hold {len(new_value)} characters, over its limit of "
                f"{block.limit} (it holds {block.size} now). Shorten or replace existing content first, or store "
                "the detail in archival memory."
            )

    def append(self, name: str, content: str) -> str:
        block = self.block(name)
        if not content.strip():
            raise CoreMemoryError("Nothing to append: content is empty.")
        new_value = f"{block.value}\n{content}" if block.value else content
        self._check(block, new_value)
        block.value = new_value
        return new_value

    def replace(self, name: str, old_content: str, new_content: str) -> str:
        block = self.block(name)
        if not old_content:
            raise CoreMemoryError("old_content is empty; give the exact text to replace.")
        count = block.value.count(old_content)
        if count == 0:
            raise CoreMemoryError(f"Text {old_content!r} was not found in block {name!r}; it must match exactly.")
        new_value = block.value.replace(old_content, new_content)
        if not new_content:
            # A deletion should not leave blank lines behind.
            new_value = "\n".join(line for line in new_value.split("\n") if line.strip())
        self._check(block, new_value)
        block.value = new_value
        return new_value

    def render(self) -> str:
        parts = []
        for block in self.blocks.values():
            parts.append(
                f'<{block.label} characters="{block.size}/{block.limit}">\n{block.value}\n</{block.label}>'
            )
        return "\n".join(parts)
