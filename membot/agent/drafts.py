"""Replies shown while the model writes them: from a streamed reply, the `message` of each send_message call as
far as it has arrived, as ReplyDraft events. Pure logic."""

from __future__ import annotations

from membot.agent.events import ReplyDraft
from membot.agent.llm.partial_json import partial_string
from membot.agent.llm.stream import StreamedReply

REPLY_FUNCTION, REPLY_FIELD = "send_message", "message"
#: Once a reply has begun, its arguments are read again after this many more characters: each read parses them
#: from the start, and the platforms show an edit a second at most anyway.
READ_EVERY = 48


class Drafts:
    """The drafts of one model call. `prefix` makes their keys unique within the step."""

    def __init__(self, agent_id: int, prefix: str) -> None:
        self.agent_id = agent_id
        self.prefix = prefix
        #: Draft key -> the text last shown, and how long the arguments were when it was read.
        self.shown: dict[str, str] = {}
        self._read_at: dict[str, int] = {}

    def key(self, position: int) -> str:
        """The key of the draft of the call at `position` in the reply's calls."""
        return f"{self.prefix}.{position}"

    def update(self, reply: StreamedReply) -> list[ReplyDraft]:
        """The drafts that grew with the reply's last chunk."""
        if not reply.grown:
            return []
        order = sorted(reply.calls)
        grown: list[ReplyDraft] = []
        for index in sorted(reply.grown):
            call = reply.calls[index]
            if call.name != REPLY_FUNCTION:
                continue
            key = self.key(order.index(index))
            if key in self.shown and call.length - self._read_at[key] < READ_EVERY:
                continue  # the message has begun: read it again once it has grown some more
            self._read_at[key] = call.length
            text = partial_string(call.arguments, REPLY_FIELD)
            if text and text != self.shown.get(key):
                self.shown[key] = text
                grown.append(ReplyDraft(self.agent_id, key, text))
        return grown
