"""A question found by conversation search brings its reply (memory/replies.py): the next message a person
wrote takes the question's rank, on both databases, within the page's size, and never from another agent or, for a
shared step, from a private conversation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.replies import is_question, with_replies
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import assistant_message, user_message
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow
from tests.conftest import store_messages

QUESTION = "What got you into pottery lately?"
ANSWER = "My aunt showed me her wheel and I was hooked."


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


@pytest.mark.both_databases
async def test_a_question_found_brings_its_reply_just_before_it(db: Database):
    (me,) = await _agents(db, "me")
    await store_messages(db, user_message(me, "pottery class was fun, pottery is great"),
                         user_message(me, QUESTION), assistant_message(me, "Noted.", None),
                         user_message(me, ANSWER), user_message(me, "unrelated chatter"))
    recall = RecallMemory(db, me, TermFrequencies())
    page = await recall.search("pottery", private=True)
    # The answer shares no word with the query: only its question's rank brings it. The reply is the next
    # message a person wrote, not the assistant's message in between.
    assert [m.search_text for m in page.items] == ["pottery class was fun, pottery is great", ANSWER, QUESTION]
    assert page.total == 3
    # A page of two keeps its size: the question goes on to the next page, and is counted.
    two = await recall.search("pottery", page_size=2, private=True)
    assert [m.search_text for m in two.items] == ["pottery class was fun, pottery is great", ANSWER]
    assert two.total == 3
    rest = await recall.search("pottery", page=1, page_size=2, private=True)
    assert [m.search_text for m in rest.items] == [QUESTION] and rest.total == 3
    # A page of one: every hit and reply is reached, one a page, none twice.
    ones = [(await recall.search("pottery", page=n, page_size=1, private=True)).items for n in range(4)]
    assert [m.search_text for items in ones for m in items] == [
        "pottery class was fun, pottery is great", ANSWER, QUESTION]


@pytest.mark.both_databases
async def test_the_agents_question_brings_the_users_answer(db: Database):
    (me,) = await _agents(db, "me")
    await store_messages(db, user_message(me, "back from the trip"),
                         assistant_message(me, None, None, said="Welcome back! How was Oslo?"),
                         assistant_message(me, None, None, said="I saved a note about it."),
                         user_message(me, "Cold, but the fjords were worth it."))
    page = await RecallMemory(db, me, TermFrequencies()).search("oslo", private=True)
    # (The agent's next message follows, found through its context: the index holds it beside the question.)
    assert [m.search_text for m in page.items][:2] == ["Cold, but the fjords were worth it.",
                                                        "Welcome back! How was Oslo?"]


def _said(message, place: str):  # type: ignore[no-untyped-def]
    """The message as a step at `place` stores it: "dm" is private, any other place shared."""
    return replace(message, place=place, private=place == "dm")


@pytest.mark.both_databases
async def test_a_reply_is_only_the_agents_own_and_shared_for_a_shared_step(db: Database):
    me, other = await _agents(db, "me", "other")
    await store_messages(db, _said(user_message(me, QUESTION), "discord:1"))
    await store_messages(db, _said(user_message(other, "Another agent's answer"), "discord:1"))  # between, by id
    await store_messages(db, _said(user_message(me, "A private answer"), "dm"),
                         _said(user_message(me, ANSWER), "discord:1"))
    recall = RecallMemory(db, me, TermFrequencies())
    shared = await recall.search("pottery", private=False)
    assert [m.search_text for m in shared.items] == [ANSWER, QUESTION]
    # A private step may see the DM, but it was said elsewhere: it is no reply to the channel's question (the
    # channel's answer is a hit of its own: the index holds the question beside it as its context).
    private = await recall.search("pottery", private=True)
    assert private.items[0].search_text == QUESTION


@pytest.mark.both_databases
async def test_a_reply_is_said_where_the_question_was(db: Database):
    (me,) = await _agents(db, "me")
    await store_messages(db, _said(user_message(me, QUESTION), "discord:1"),
                         _said(user_message(me, "Meanwhile in another channel"), "discord:2"),
                         _said(user_message(me, ANSWER), "discord:1"))
    page = await RecallMemory(db, me, TermFrequencies()).search("pottery", private=False)
    # The next user message was elsewhere: the question brings none.
    assert page.items[0].search_text == QUESTION


@pytest.mark.both_databases
async def test_a_reply_that_ranks_higher_stays_and_is_not_shown_twice(db: Database):
    (me,) = await _agents(db, "me")
    await store_messages(db, user_message(me, "Did you like pottery?"),
                         user_message(me, "pottery pottery pottery, I love pottery"))
    page = await RecallMemory(db, me, TermFrequencies()).search("pottery", private=True)
    assert [m.search_text for m in page.items] == ["pottery pottery pottery, I love pottery", "Did you like pottery?"]


@dataclass(frozen=True)
class _Row:
    id: int
    search_text: str = ""


def test_replies_move_up_once_and_the_window_keeps_its_size():
    rows = [_Row(1), _Row(2, "why?"), _Row(3), _Row(4, "how?"), _Row(5)]
    replies = {2: _Row(3), 4: _Row(9)}
    assert [r.id for r in with_replies(rows, replies)] == [1, 3, 2, 9, 4, 5]
    assert [r.id for r in with_replies(rows[:2], replies)] == [1, 3, 2]
    assert [r.id for r in with_replies(rows, {})] == [1, 2, 3, 4, 5]
    assert [r.id for r in with_replies(rows, {2: _Row(1)})] == [1, 2, 3, 4, 5]  # ranked above already


def test_questions_are_marked_in_any_script():
    assert is_question("did you go?") and is_question("你去了吗？") and is_question("هل ذهبت؟")
    assert not is_question("I went.") and not is_question(None) and not is_question("")
