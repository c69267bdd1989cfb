"""Times named in a search: "yesterday", "last May", "in 2023", "on 8 May 2023", 上周, 先月, 2023年5月...

A phrase becomes a range of days in the user's time zone, given back in naive UTC as messages store their
`created_at`, and is taken out of the query (its words are about when, not what). Pure: the caller gives `now`
and the zone. One phrase per query, the first found in the order of `_RULES` (the most specific forms first).

English, Chinese, Japanese and Korean forms are read; a month named alone ("May", also a verb) is read only
after "in", "during" or "last", or with a day or a year. A month or day given without a year is its latest
occurrence not after today.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = {
    name: number
    for number, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")],
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20|21)\d\d)"
_SEP = r"(?:,\s*|\s+)"  # before a year: "May 8, 2023", "May 8,2023", "8 May 2023"
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}


@dataclass(frozen=True)
class TimeRange:
    """Messages from `start` (included) to `end` (excluded), naive UTC; `phrase` is the text that named it."""

    start: datetime
    end: datetime
    phrase: str


Days = tuple[date, date]  # first day included, last day excluded, in the user's zone
_Rule = tuple[re.Pattern[str], Callable[[dict[str, str], date], Days | None]]


def _latest_month(month: int, today: date, *, before_this: bool = False) -> date:
    year = today.year if month < today.month or (month == today.month and not before_this) else today.year - 1
    return date(year, month, 1)


def _month_span(first: date) -> Days:
    nxt = date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
    return first, nxt


def _day(d: date) -> Days:
    return d, d + timedelta(days=1)


def _week_of(d: date) -> Days:
    monday = d - timedelta(days=d.weekday())
    return monday, monday + timedelta(days=7)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _full_date(g: dict[str, str], today: date) -> date | None:
    """A day from named groups: year, month (a name or a number) and day; no year means its latest past date."""
    month = _month_group(g)  # a name that is no month raises KeyError: find_time passes the phrase over
    day = int(g["day"])
    if g.get("year"):
        return _safe_date(int(g["year"]), month, day)
    found = _safe_date(today.year, month, day)
    if found is not None and found <= today:
        return found
    return _safe_date(today.year - 1, month, day)


def _month_group(g: dict[str, str]) -> int:
    return _MONTHS[g["month"].lower().rstrip(".")] if not g["month"].isdigit() else int(g["month"])


def _relative(g: dict[str, str], today: date) -> Days | None:
    """The day or week before or after a date: "the week before 9 June 2023"."""
    anchor = _full_date(g, today)
    if anchor is None:
        return None
    width = timedelta(days=7 if g["unit"] == "week" else 1)
    return (anchor - width, anchor) if g["side"] == "before" else (anchor + timedelta(days=1), anchor + width + timedelta(days=1))


def _ago(g: dict[str, str], today: date) -> Days:
    count = int(g["n"]) if g["n"].isdigit() else _COUNTS[g["n"].lower()]
    if g["unit"].startswith("day"):
        return _day(today - timedelta(days=count))
    return _week_of(today - timedelta(weeks=count))


def _this_or_last(unit: str, back: int, today: date) -> Days:
    if unit == "day":
        return _day(today - timedelta(days=back))
    if unit == "week":
        return _week_of(today - timedelta(weeks=back))
    if unit == "month":
        first = today.replace(day=1)
        for _ in range(back):
            first = (first - timedelta(days=1)).replace(day=1)
        return _month_span(first)
    return date(today.year - back, 1, 1), date(today.year - back + 1, 1, 1)


def _fixed(unit: str, back: int) -> Callable[[dict[str, str], date], Days]:
    return lambda _g, today: _this_or_last(unit, back, today)


def _year_in(g: dict[str, str], _today: date) -> Days:
    year = int(g["year"])
    return date(year, 1, 1), date(year + 1, 1, 1)


def _month_in(g: dict[str, str], today: date) -> Days | None:
    month = _month_group(g)
    if not 1 <= month <= 12:
        return None
    if g.get("year"):
        return _month_span(date(int(g["year"]), month, 1))
    return _month_span(_latest_month(month, today))


def _dated(g: dict[str, str], today: date) -> Days | None:
    found = _full_date(g, today)
    return _day(found) if found else None


def _rule(pattern: str, make: Callable[[dict[str, str], date], Days | None]) -> _Rule:
    # English words need word boundaries; CJK text has none, so its patterns carry their own.
    return re.compile(pattern, re.IGNORECASE), make


_ON = r"(?:\bon\s+)?"
# A day written in full, in the three spellings read: 2023-05-08, 8 May 2023, May 8, 2023 (year optional but
# in the first).
_ANCHORS = (
    r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})",
    rf"{_DAY}\s+(?:of\s+)?{_MONTH}(?:{_SEP}{_YEAR})?",
    rf"{_MONTH}\s+{_DAY}(?:{_SEP}{_YEAR})?",
)
_RULES: list[_Rule] = [
    *(_rule(rf"\bthe\s+(?P<unit>day|week)\s+(?P<side>before|after)\s+{anchor}(?!\w)", _relative) for anchor in _ANCHORS),
    _rule(rf"{_ON}\b(?P<year>\d{{4}})-(?P<month>\d{{1,2}})-(?P<day>\d{{1,2}})\b", _dated),
    _rule(rf"{_ON}\b{_DAY}\s+(?:of\s+)?{_MONTH}{_SEP}{_YEAR}\b", _dated),
    _rule(rf"{_ON}\b{_MONTH}\s+{_DAY}{_SEP}{_YEAR}\b", _dated),
    _rule(rf"(?:\b(?:in|during)\s+)?\b{_MONTH}{_SEP}{_YEAR}\b", _month_in),
    _rule(rf"\b(?:in|during)\s+{_YEAR}\b", _year_in),
    _rule(rf"\blast\s+{_MONTH}(?!\w)", lambda g, today: _month_span(_latest_month(_month_group(g), today, before_this=True))),
    _rule(rf"{_ON}\b{_DAY}\s+(?:of\s+)?{_MONTH}(?!\w)", _dated),
    _rule(rf"{_ON}\b{_MONTH}\s+{_DAY}(?!\w)", _dated),
    _rule(rf"\b(?:in|during)\s+{_MONTH}(?!\w)", _month_in),
    _rule(r"\b(?P<n>\d+|an?|one|two|three|four|five|six|seven)\s+(?P<unit>days?|weeks?)\s+ago\b", _ago),
    _rule(r"\bthe\s+day\s+before\s+yesterday\b", _fixed("day", 2)),
    _rule(r"\byesterday\b", _fixed("day", 1)),
    _rule(r"\btoday\b", _fixed("day", 0)),
    _rule(r"\blast\s+week\b", _fixed("week", 1)),
    _rule(r"\bthis\s+week\b", _fixed("week", 0)),
    _rule(r"\blast\s+month\b", _fixed("month", 1)),
    _rule(r"\bthis\s+month\b", _fixed("month", 0)),
    _rule(r"\blast\s+year\b", _fixed("year", 1)),
    _rule(r"\bthis\s+year\b", _fixed("year", 0)),
    # Chinese, Japanese (and a few Korean words): dates first, then the relative words.
    _rule(r"(?P<year>\d{4})\s*年\s*(?P<month>\d{1,2})\s*月\s*(?P<day>\d{1,2})\s*[日号號]", _dated),
    _rule(r"(?P<year>\d{4})\s*年\s*(?P<month>\d{1,2})\s*月(?:份)?", _month_in),
    _rule(r"(?<!\d)(?P<month>\d{1,2})\s*月\s*(?P<day>\d{1,2})\s*[日号號]", _dated),
    _rule(r"(?P<year>\d{4})\s*年(?:에)?", _year_in),
    _rule(r"(?<!\d)(?P<month>\d{1,2})\s*月(?:份)?", _month_in),
    _rule(r"前天|一昨日|おととい|그저께", _fixed("day", 2)),
    _rule(r"昨天|昨日|きのう|어제", _fixed("day", 1)),
    _rule(r"今天|今日|きょう|오늘", _fixed("day", 0)),
    _rule(r"上周|上週|上星期|上个星期|上個星期|先週|지난\s*주", _fixed("week", 1)),
    _rule(r"这周|這週|本周|本週|今週|이번\s*주", _fixed("week", 0)),
    _rule(r"上个月|上個月|上月|先月|지난\s*달", _fixed("month", 1)),
    _rule(r"这个月|這個月|本月|今月|이번\s*달", _fixed("month", 0)),
    _rule(r"前年|一昨年|재작년", _fixed("year", 2)),
    _rule(r"去年|昨年|작년", _fixed("year", 1)),
    _rule(r"今年|올해", _fixed("year", 0)),
]


def mentions_time(query: str) -> bool:
    """Whether the query names a time at all (which zone it is in does not change that)."""
    return any(pattern.search(query) for pattern, _ in _RULES)


def find_time(query: str, now: datetime, tz: ZoneInfo) -> tuple[TimeRange | None, str]:
    """The range the query's first time phrase names, in the zone `tz` at `now` (naive means UTC), and the query
    without that phrase; (None, query) when it names none. An impossible day (31 February) is passed over."""
    aware = now if now.tzinfo else now.replace(tzinfo=UTC)
    today = aware.astimezone(tz).date()
    for pattern, make in _RULES:
        for match in pattern.finditer(query):
            groups = {key: value for key, value in match.groupdict().items() if value is not None}
            try:
                days = make(groups, today)
            except (ValueError, KeyError, OverflowError):
                days = None
            if days is None:
                continue
            rest = " ".join((query[: match.start()] + " " + query[match.end() :]).split())
            return TimeRange(day_start_utc(days[0], tz), day_start_utc(days[1], tz), match.group(0).strip()), rest
    return None, query


def day_start_utc(day: date, tz: ZoneInfo) -> datetime:
    """When `day` begins in the zone `tz`, as a naive UTC time (as messages are stored)."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
