"""Core memory: the `persona`, `human` and `private` blocks held in the prompt. Pure logic, no I/O.

A write that would pass a block's limit is refused with a message that says the limit and the current size;
nothing is ever cut silently.

`private` holds what the agent learnt in private conversations and is shown only there (agent/place.py);
`human` and `persona` are shown everywhere, so only a step in a shared channel may change them. In a private
step their edits go to `private` instead, and the function's result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from membot.agent.place import PRIVATE_BLOCK

BLOCK_LABELS = ("persona", "human", PRIVATE_BLOCK)
NOT_HERE = (
    "The 'private' block holds what the user said in private conversations; it is not available in a shared "
    "channel. Use 'human' for what may be said here."
)
REDIRECTED = (
    "Saved to the 'private' block: in a private conversation, what you learn stays private. 'human' and "
    "'persona' are shown in shared channels and change only there."
)
SHARED_BLOCK = (
    "That text is in the {name!r} block, which shared channels show; it can change only in a shared channel. "
    "Note the correction in the 'private' block instead."
)
#: The blocks every step shows: a private step's edits of them go to `private`.
SHARED_BLOCKS = ("human", "persona")


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
        values = {"persona": persona, "human": human, PRIVATE_BLOCK: ""}
        return cls({label: Block(label, value, limit) for label, value in values.items()})

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

    def target(self, name: str, *, private: bool) -> str:
        """The block an edit of `name` lands in, in a private step or not (see the module's docstring)."""
        if name == PRIVATE_BLOCK and not private:
            raise CoreMemoryError(NOT_HERE)
        if name in SHARED_BLOCKS and private:
            return PRIVATE_BLOCK
        return name

    def edit_append(self, name: str, content: str, *, private: bool) -> str | None:
        """`append`, where the step may write; what to tell the model (None: nothing to add)."""
        target = self.target(name, private=private)
        self.append(target, content)
        return REDIRECTED if target != name else None

    def edit_replace(self, name: str, old_content: str, new_content: str, *, private: bool) -> str | None:
        """`replace`, where the step may write; what to tell the model (None: nothing to add)."""
        target = self.target(name, private=private)
        if target != name and old_content and old_content not in self.block(target).value \
                and old_content in self.block(name).value:
            raise CoreMemoryError(SHARED_BLOCK.format(name=name))
        self.replace(target, old_content, new_content)
        return REDIRECTED if target != name else None

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

    def render(self, *, private: bool = True) -> str:
        """The blocks as the prompt shows them; a shared channel's prompt has no `private` block."""
        parts = []
        for label in sorted(self.blocks, key=_order):
            block = self.blocks[label]
            if label == PRIVATE_BLOCK and not private:
                continue
            parts.append(
                f'<{block.label} characters="{block.size}/{block.limit}">\n{block.value}\n</{block.label}>'
            )
        return "\n".join(parts)


def _order(label: str) -> tuple[int, str]:
    """persona, human, private, then any other block by name (the database hands them over by name)."""
    return (BLOCK_LABELS.index(label) if label in BLOCK_LABELS else len(BLOCK_LABELS), label)
