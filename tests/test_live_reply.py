"""A reply shown while it is written (adapters/live_reply.py), with stub posts and a test clock: when drafts are
posted and edited, and what happens when a post or an edit fails or the step ends without its final text."""

from __future__ import annotations

import time
from typing import Any

from membot.adapters.live_reply import Budget, LiveReplies, LiveReply
from membot.agent.events import AssistantMessage, ReplyDraft


class Chat:
    """Messages by handle; `fail_posts` drafts are refused (as a rate-limited draft is), `fail_edits` too."""

    def __init__(self, fail_posts: int = 0, fail_edits: int = 0) -> None:
        self.shown: dict[int, str] = {}
        self.fail_posts, self.fail_edits = fail_posts, fail_edits
        self.calls: list[str] = []

    async def post(self, text: str, final: bool) -> Any:
        self.calls.append("post")
        if self.fail_posts and not final:
            self.fail_posts -= 1
            return None
        handle = len(self.calls)
        self.shown[handle] = text
        return handle

    async def edit(self, handle: int, text: str) -> None:
        self.calls.append("edit")
        if self.fail_edits:
            self.fail_edits -= 1
            raise RuntimeError("message deleted")
        self.shown[handle] = text

    async def delete(self, handle: int) -> None:
        self.calls.append("delete")
        self.shown.pop(handle)


def _reply(chat: Chat, clock: list[float], budget: Budget | None = None) -> LiveReply:
    return LiveReply(chat.post, chat.edit, chat.delete, lambda text: [text[i:i + 20] for i in range(0, len(text), 20)],
                     [budget or Budget(100, 1.0)], clock=lambda: clock[0])


async def test_a_draft_shows_after_a_sentence_then_edits_once_a_second_and_ends_exact():
    chat, clock = Chat(), [0.0]
    reply = _reply(chat, clock)
    await reply.draft("Hello there")
    clock[0] = 0.5
    await reply.draft("Hello there. How")  # a sentence, and past the first 0.4 s
    clock[0] = 0.7
    await reply.draft("Hello there. How are")  # under a second since: waits
    assert chat.calls == ["post"] and list(chat.shown.values()) == ["Hello there. How"]
    await reply.finish("Hello there. How are you today, friend?")
    assert list(chat.shown.values()) == ["Hello there. How are", " you today, friend?"]


async def test_a_refused_draft_post_leaves_the_final_text_to_be_posted_whole():
    chat, clock = Chat(fail_posts=1), [0.0]
    reply = _reply(chat, clock)
    await reply.draft("First")
    clock[0] = 2.0
    await reply.draft("First words.")
    assert chat.calls == ["post"] and not chat.shown  # refused: not counted as shown
    await reply.finish("First words. And the rest.")
    assert list(chat.shown.values()) == ["First words. And the", " rest."]


async def test_a_final_text_that_cannot_be_edited_in_is_posted_anew():
    chat, clock = Chat(fail_edits=1), [0.0]
    reply = _reply(chat, clock)
    await reply.draft("Half")
    clock[0] = 2.0
    await reply.draft("Half a repl")
    assert list(chat.shown.values()) == ["Half a repl"]
    await reply.finish("Half a reply, whole.")
    assert list(chat.shown.values()) == ["Half a reply, whole."]


async def test_a_spent_budget_holds_drafts_back_but_never_the_final_text():
    chat, clock = Chat(), [2.0]
    budget = Budget(1, 5.0)
    budget.spend(2.0)  # the channel's other posts used it
    reply = _reply(chat, clock, budget)
    await reply.draft("Words.")
    clock[0] = 3.0
    await reply.draft("Words. More words.")
    assert chat.calls == []
    await reply.finish("Words. More words.")
    assert list(chat.shown.values()) == ["Words. More words."]


async def test_drafts_whose_final_text_never_came_are_taken_back():
    chat, clock = Chat(), [2.0]
    replies = LiveReplies(lambda: _reply(chat, clock))
    assert await replies.handle(ReplyDraft(1, "1.0", "The model"))
    clock[0] = 2.5
    assert await replies.handle(ReplyDraft(1, "1.0", "The model broke off here."))
    assert chat.shown
    assert not await replies.handle(AssistantMessage(1, "another reply, not a draft's"))
    await replies.close()
    assert chat.shown == {}


async def test_a_budget_paces_what_must_go_instead_of_refusing_it():
    budget = Budget(2, 0.2)
    started = time.monotonic()
    for _ in range(3):
        await budget.take()
    # The third waited for the first to leave the window: paced, not refused.
    assert 0.18 <= time.monotonic() - started < 1.0
    # A budget of none refuses drafts; what must go is not held back by it.
    nothing = Budget(0, 1.0)
    await nothing.take()
    assert not nothing.free(time.monotonic())


async def test_a_budget_of_edits_is_spent_by_drafts_for_their_final_edit_and_holds_others_back():
    # Slack's chat.update limit per workspace: a reply that shows drafts ends with an edit; one that does not, not.
    chat, clock = Chat(), [0.0]
    edits = Budget(1, 60.0, edits_only=True)
    first, second = _reply(chat, clock, edits), _reply(chat, clock, edits)
    await first.draft("He")
    await second.draft("Hi")
    clock[0] = 0.5
    await first.draft("Hello there. How")  # posted: it spends the edit its final text will need
    await second.draft("Hi. A second reply")  # written at the same time: no edit left to promise, no draft
    await first.finish("Hello there. How are")
    await second.finish("Hi. A second reply!")
    assert chat.calls == ["post", "edit", "post"]  # one edit in all, within the budget
    assert list(chat.shown.values()) == ["Hello there. How are", "Hi. A second reply!"]
