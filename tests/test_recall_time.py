"""Conversation search that follows time: a date phrase in the query ("last May", "yesterday", 上周, 先月) is read
in the user's time zone (memory/when.py), and the search keeps to the messages of that time, the other hits
following when those are too few; still one agent's messages, and no private message for a shared step."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.memory.when import find_time, mentions_time
from membot.agent.messages import Message, user_message
from membot.agent.store import wakeups
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases

UTC = ZoneInfo("UTC")
TOKYO = ZoneInfo("Asia/Tokyo")
LA = ZoneInfo("America/Los_Angeles")
# A Thursday, late evening in UTC: already Friday in Tokyo.
NOW = datetime(2026, 12, 3, 17, 0)


def _range(query: str, tz: ZoneInfo = UTC, now: datetime = NOW) -> tuple[datetime, datetime, str]:
    found, rest = find_time(query, now, tz)
    assert found is not None, query
    return found.start, found.end, rest


@pytest.mark.parametrize(
    ("query", "start", "end", "rest"),
    [
        ("what did we say yesterday about pizza", datetime(2026, 12, 2), datetime(2026, 12, 3), "what did we say about pizza"),
        ("the trip last May", datetime(2026, 5, 1), datetime(2026, 6, 1), "the trip"),
        ("Paris in May 2023", datetime(2023, 5, 1), datetime(2023, 6, 1), "Paris"),
        ("concerts in 2023", datetime(2023, 1, 1), datetime(2024, 1, 1), "concerts"),
        ("dinner on 8 May 2023", datetime(2023, 5, 8), datetime(2023, 5, 9), "dinner"),
        ("dinner on May 8th, 2023", datetime(2023, 5, 8), datetime(2023, 5, 9), "dinner"),
        ("the forest on December 1,2023", datetime(2023, 12, 1), datetime(2023, 12, 2), "the forest"),
        ("notes 2023-05-08", datetime(2023, 5, 8), datetime(2023, 5, 9), "notes"),
        ("the talk the week before 9 June 2023", datetime(2023, 6, 2), datetime(2023, 6, 9), "the talk"),
        ("last week", datetime(2026, 11, 23), datetime(2026, 11, 30), ""),  # Monday to Monday
        ("last month", datetime(2026, 11, 1), datetime(2026, 12, 1), ""),
        ("3 days ago", datetime(2026, 11, 30), datetime(2026, 12, 1), ""),
        ("昨天的寿司", datetime(2026, 12, 2), datetime(2026, 12, 3), "的寿司"),
        ("上周的会议", datetime(2026, 11, 23), datetime(2026, 11, 30), "的会议"),
        ("先週の会議", datetime(2026, 11, 23), datetime(2026, 11, 30), "の会議"),
        ("去年の旅行", datetime(2025, 1, 1), datetime(2026, 1, 1), "の旅行"),
        ("昨年", datetime(2025, 1, 1), datetime(2026, 1, 1), ""),
        ("2023年5月 旅行", datetime(2023, 5, 1), datetime(2023, 6, 1), "旅行"),
        ("5月の旅行", datetime(2026, 5, 1), datetime(2026, 6, 1), "の旅行"),
        ("지난주 회의", datetime(2026, 11, 23), datetime(2026, 11, 30), "회의"),
    ],
)
def test_date_phrases_become_ranges_and_leave_the_query(query: str, start: datetime, end: datetime, rest: str):
    assert _range(query) == (start, end, rest)


def test_the_day_is_the_users_day_in_their_zone():
    # 17:00 UTC on the 3rd is already the 4th in Tokyo: its "yesterday" is the 3rd there, 15:00 UTC on the 2nd on.
    assert _range("yesterday", TOKYO)[:2] == (datetime(2026, 12, 2, 15), datetime(2026, 12, 3, 15))
    # Los Angeles is 8 hours behind in winter, 7 in summer: the ends of "in May 2023" are PDT midnights.
    assert _range("in May 2023", LA)[:2] == (datetime(2023, 5, 1, 7), datetime(2023, 6, 1, 7))
    # Just after midnight in Tokyo on New Year's Day, "last year" is the year that just ended there.
    new_year = datetime(2026, 12, 31, 15, 30)  # 00:30 on 1 January 2027 in Tokyo
    assert _range("last year", TOKYO, new_year)[:2] == (datetime(2025, 12, 31, 15), datetime(2026, 12, 31, 15))
    assert _range("last year", UTC, new_year)[:2] == (datetime(2025, 1, 1), datetime(2026, 1, 1))


def test_a_month_without_a_year_is_its_latest_and_last_month_name_is_before_this_one():
    may = datetime(2026, 5, 20)
    assert _range("in May", UTC, may)[:2] == (datetime(2026, 5, 1), datetime(2026, 6, 1))
    assert _range("last May", UTC, may)[:2] == (datetime(2025, 5, 1), datetime(2025, 6, 1))
    assert _range("in June", UTC, may)[:2] == (datetime(2025, 6, 1), datetime(2025, 7, 1))


@pytest.mark.parametrize("query", ["may I ask about pizza", "march on", "the 2023 report", "we met at 5", ""])
def test_words_that_only_look_like_times_are_left_alone(query: str):
    assert find_time(query, NOW, UTC) == (None, query)
    assert not mentions_time(query)


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


def _said(agent: int, text: str, at: datetime, *, private: bool = True) -> Message:
    return replace(user_message(agent, text), created_at=at, private=private)


async def test_a_named_time_narrows_the_search_and_other_hits_follow(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    # In the order said: each message's search context is the one before it (the hike's holds "sushi").
    await store_messages(
        db,
        _said(alice, "we had sushi with Tom at the harbour", datetime(2026, 5, 9, 12)),
        _said(bob, "sushi in May with my sister", datetime(2026, 5, 10, 12)),
        _said(alice, "went hiking in the hills", datetime(2026, 5, 20, 12)),
        _said(alice, "sushi again, the place near work", datetime(2026, 10, 2, 12)),
        _said(alice, "sushi sushi sushi, best sushi ever", datetime(2026, 11, 20, 12)),
    )
    recall = RecallMemory(db, alice, TermFrequencies())
    plain = await recall.search("sushi", private=True, now=NOW)
    assert plain.total == 4
    page = await recall.search("sushi last May", private=True, now=NOW, tz=UTC)
    # May's messages first (the one saying it, then the one after it), the others after them (a page of ten
    # is not filled by May alone); never Bob's.
    said = [m.search_text for m in page.items]
    assert said[:2] == ["we had sushi with Tom at the harbour", "went hiking in the hills"]
    assert set(said[2:]) == {"sushi again, the place near work", "sushi sushi sushi, best sushi ever"}
    assert page.total == 4 and all(m.agent_id == alice for m in page.items)
    # Enough hits in that time to fill the page: only they come back.
    narrow = await recall.search("sushi last May", page_size=2, private=True, now=NOW, tz=UTC)
    assert [m.search_text for m in narrow.items] == said[:2]
    assert narrow.total == 2
    # A query that names only a time lists that time's messages, newest first.
    may = await recall.search("in May", private=True, now=NOW, tz=UTC)
    assert [m.search_text for m in may.items] == ["went hiking in the hills", "we had sushi with Tom at the harbour"]


async def test_the_agents_own_zone_decides_the_day(db: Database):
    (alice,) = await _agents(db, "alice")
    # NOW is already the 4th in Tokyo, whose "yesterday" is the 3rd there; 10:00 UTC on the 2nd is 19:00 on the
    # 2nd in Tokyo: yesterday in UTC, the day before in Tokyo.
    await store_messages(db, _said(alice, "ramen for dinner", datetime(2026, 12, 2, 10)))
    recall = RecallMemory(db, alice, TermFrequencies())
    assert (await recall.search("昨日", private=True, now=NOW)).total == 1  # UTC: the 2nd
    await db.write(lambda session: wakeups.set_zone(session, agent_id=alice, name="Asia/Tokyo"))
    assert (await recall.search("昨日", private=True, now=NOW)).total == 0  # Tokyo: from 15:00 UTC on the 2nd
    assert (await recall.search("昨日", private=True, now=NOW, tz=UTC)).total == 1


async def test_a_shared_step_finds_no_private_message_of_that_time(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    await store_messages(
        db,
        _said(alice, "my diagnosis came in yesterday", datetime(2026, 12, 2, 9)),
        _said(alice, "the team lunch was fun", datetime(2026, 12, 2, 13), private=False),
        _said(bob, "bob's own lunch yesterday", datetime(2026, 12, 2, 13), private=False),
    )
    recall = RecallMemory(db, alice, TermFrequencies())
    for query in ("yesterday", "diagnosis yesterday", "lunch yesterday"):
        shared = await recall.search(query, private=False, now=NOW, tz=UTC)
        assert all(not m.private and m.agent_id == alice for m in shared.items), query
        assert "my diagnosis came in yesterday" not in [m.search_text for m in shared.items]
    assert [m.search_text for m in (await recall.search("yesterday", private=False, now=NOW, tz=UTC)).items] == [
        "the team lunch was fun"
    ]
    private = await recall.search("yesterday", private=True, now=NOW, tz=UTC)
    assert private.total == 2



async def test_a_question_of_stop_words_and_a_time_lists_that_time(db: Database):
    (alice,) = await _agents(db, "alice")
    await store_messages(db, _said(alice, "what a day: we did the museum", datetime(2026, 11, 20, 12)),
                         _said(alice, "we went to the lake", datetime(2026, 12, 2, 12)))
    recall = RecallMemory(db, alice, TermFrequencies())
    # "what did we do" is only stop words: the question is the day, not those words on any day.
    page = await recall.search("what did we do yesterday", private=True, now=NOW, tz=UTC)
    assert [m.search_text for m in page.items] == ["we went to the lake"]


async def test_conversation_search_date_reads_days_in_the_users_zone_too(db: Database):
    (alice,) = await _agents(db, "alice")
    # 20:00 UTC on the 2nd is 05:00 on the 3rd in Tokyo: the same day a search naming "3 December" means there.
    await store_messages(db, _said(alice, "late call with Ken", datetime(2026, 12, 2, 20)))
    recall = RecallMemory(db, alice, TermFrequencies())
    assert (await recall.search_dates("2026-12-02", "2026-12-02", private=True)).total == 1  # UTC until known
    await db.write(lambda session: wakeups.set_zone(session, agent_id=alice, name="Asia/Tokyo"))
    assert (await recall.search_dates("2026-12-02", "2026-12-02", private=True)).total == 0
    assert (await recall.search_dates("2026-12-03", "2026-12-03", private=True)).total == 1
    assert (await recall.search("call on 3 December 2026", private=True, now=NOW)).items[0].search_text == (
        "late call with Ken")
