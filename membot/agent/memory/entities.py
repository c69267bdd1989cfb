"""Entity memory, the pure part: finding the entities a message names, their decayed counts, and the compact
line of the most talked-about ones that goes into the prompt and into /memory. No I/O here: the store
(store/entities.py) and the migration that backfills old messages both call these.

The extractor is local and light (regular expressions, no model call), so it can run inside every step's
transaction. It is built to be precise rather than greedy: a wrong entity in the prompt costs more than a
missed one, which the next mention will likely catch.

Covered: runs of capitalised words in Latin script ("New York", "Dr. Smith", "LGBTQ"), except ordinary words
that are capitalised only because they start a sentence ("The", "Thanks") and those that are always
capitalised but name no entity ("I", days, months); @handles; Katakana runs of two or more characters
(Japanese loanwords, which include foreign names: トム, スターバックス, but also common nouns like コーヒー);
and a Chinese, Japanese or Korean name right before an honorific (山田さん, 田中先生, 王老师, 김씨). Not
covered: names in lowercase, names in unspaced Han or Hangul text without an honorific, scripts without case
(Arabic, Hebrew, Thai...), and sentence-initial names that are also ordinary words ("May", "Will").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from membot.agent.context.tokens import CHARS_PER_TOKEN

# How long until a mention counts half as much in the ranking: long enough that the people of a fortnight's
# talk stay on the list, short enough that who the user talks about *now* overtakes who they talked about
# months ago.
HALF_LIFE = timedelta(days=14)
# The top list in the prompt: a few names cost little and tell the model who matters to the user.
PROMPT_TOKENS = 100
#: The prompt section's heading (context/window.py); its tokens count within PROMPT_TOKENS.
ENTITIES_HEADING = "### Entities (most mentioned)"
# How many an agent keeps at hand (the prompt takes those that fit its budget; /memory shows them all).
TOP_ENTITIES = 20
# Written forms of one entity kept beside its name: enough for "Mel"/"MEL"/"@mel", not a growing list.
MAX_ALIASES = 4
# Longer runs of capitalised words are titles or shouting, not names; the columns hold this much of a name.
MAX_WORDS = 4
MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class Mention:
    """An entity named in a text: `name` as written, `key` the normalised form mentions are matched by.
    `initial`: only seen as one capitalised word opening a sentence, which may be an ordinary word ("Seeing",
    "Appreciate"): counted only for an entity already known (see `counted`)."""

    name: str
    key: str
    initial: bool = False


@dataclass(frozen=True, slots=True)
class Entity:
    """What an agent knows of one entity in one scope (private: learnt in a private conversation)."""

    key: str
    name: str
    mentions: int
    weight: float
    last_seen: datetime
    first_seen: datetime
    private: bool = False
    aliases: tuple[str, ...] = ()


# ----- the extractor ------------------------------------------------------------------------------------------

_UPPER = "A-ZÀ-ÖØ-Þ"
_TITLES = r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|St|Mt|Sr|Jr)\."
_WORD = rf"[{_UPPER}][\w’'&\-]*"
# A run of capitalised words on one line, optionally after a title ("Dr. Smith"); the lookbehind keeps it from
# starting inside a word, a handle or an e-mail address.
_RUN = re.compile(rf"(?<![\w@.’'\-])(?:{_TITLES}[ \t]+)?{_WORD}(?:[ \t]+{_WORD})*")
_HANDLE = re.compile(r"(?<![\w@])@([A-Za-z0-9_][\w.\-]*[\w])")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
# What ends a sentence: the next capitalised word may be capitalised only for that.
_SENTENCE_END = frozenset(".!?…:;\n\"“”()[]-–—*>")

# Capitalised wherever they stand, yet no entity.
_ALWAYS = frozenset(
    "i i'm i’m i've i’ve i'll i’ll i'd i’d "
    "monday tuesday wednesday thursday friday saturday sunday "
    "mon tue tues wed thu thurs fri sat sun "
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "ok okay lol omg haha hahaha wow yay oh ah tbh btw imo".split()
)
# Ordinary words that are capitalised only because they open a sentence (pronouns, articles, conjunctions,
# greetings, the usual first words of a chat message). Matched lower-case.
_ORDINARY = frozenset(
    """a about absolutely actually after again ago agreed all also although always am an and another any
    anyway anything are aren't as at aw awesome aww back be because been before being best better big both
    but by can can't cause cheers children come congrats congratulations could couldn't cool dad day dear did
    didn't do does doesn't doing don't done each either enjoy even ever every everyone everything exactly
    excited family fantastic feel feeling few finally first for from fun glad go going good goodbye got great
    had happy has hasn't have haven't having he he's hello her here here's hers hey hi him his hmm home honestly
    hope how however i'd if in indeed interesting is isn't it it's its just keep kids last let let's life like
    look looking love lovely made make many maybe me meanwhile mine mom more morning most much must my myself
    need never new next nice night no nope nor not nothing now of off oh on once one only or other our ours out
    over perhaps please plus pretty probably quite rather really right same see seems she she's should since
    so some someone something sometimes sorry sounds speaking still sure take talk talking tell thank thanks
    that that's the their theirs them then there there's these they they're thing things think this those
    though thought through thx time to today together tomorrow too totally true try two ugh um unfortunately
    until up us very wait want was wasn't way we we're we've well went were weren't what what's whatever when
    where which while who why will with without wish won't wonderful would wouldn't yeah yep yes yesterday yet
    you you'd you'll you're you've your yours yourself bye gonna wanna gotta yup woah whoa woohoo oof yum
    definitely appreciate guess remember anytime hopefully""".split()
)
# "They've", "How're", "Must've": a contraction names nothing.
_CONTRACTIONS = ("'ve", "’ve", "'ll", "’ll", "'re", "’re", "'d", "’d", "n't", "n’t", "'m", "’m")

_KATAKANA = re.compile(r"[\u30a1-\u30fa\u30fc-\u30ff][\u30a1-\u30fa\u30fb-\u30ff]*[\u30a1-\u30fa\u30fc-\u30ff]")
# A name right before an honorific: Han or Katakana for Japanese and Chinese (the longest honorifics first, so
# 先生 wins over 先), Hangul for Korean, which may put a space between.
_HONORIFIC = re.compile(
    r"([\u4e00-\u9fff\u30a1-\u30fa\u30fc]{1,4})(さん|さま|様|くん|君|ちゃん|先生|先輩|氏|殿|老师|老師|女士|小姐|同学|医生|教授)"
    r"|([\uac00-\ud7a3]{1,4}) ?(선생님|교수님|씨|님)"
)
# Characters that open many Chinese and Japanese phrases but no name: cut from the left of a name candidate
# ("我和王老师" gives 王).
_NOT_NAME = frozenset("我你他她它们和跟与及在是的了给对把被向从到也都就还又很说问找见请让叫这那有没去来")


# Ends of a name that are punctuation around it, not part of it ("Caroline," "'Sweden'").
AROUND_NAMES = " \t\n.,;:!?\"'()[]{}«»“”‘’。、，！？「」"


def entity_key(name: str) -> str:
    """The key entity memory and facts (store/facts.py) match a name by: dots as spaces, spaces collapsed, case
    folded, without punctuation around it or a handle's "@"; so "Caroline," meets "caroline", "Dr. Smith"
    "dr smith"."""
    return " ".join(name.replace(".", " ").split()).casefold().strip(AROUND_NAMES).lstrip("@")


def _sentence_start(text: str, at: int) -> bool:
    """Whether position `at` opens a sentence: nothing but spaces and quotes between it and the last
    sentence end (or the start of the text)."""
    i = at - 1
    while i >= 0 and text[i] in " \t'‘":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _names(run: str, opens_sentence: bool) -> Iterable[tuple[str, bool]]:
    """The entity names in a run of capitalised words, each with whether it is one word that opens a sentence:
    cut at words that are no entity, without the ordinary words that open a sentence."""
    current: list[str] = []
    leading = opens_sentence  # "Good Morning Mel": every ordinary word before the first kept one
    first = opens_sentence  # the name now growing opens the sentence

    def name(words: list[str]) -> tuple[str, bool]:
        text = _POSSESSIVE.sub("", " ".join(words))
        return text, first and len(words) == 1 and not (len(text) > 1 and text.isupper())  # LGBTQ: an acronym

    for word in run.split():
        lower = _POSSESSIVE.sub("", word).casefold()
        ordinary = lower in _ORDINARY and (leading or word.isupper())  # or SHOUTED
        if lower in _ALWAYS or ordinary or lower.endswith(_CONTRACTIONS):
            if current:
                yield name(current)
            current, first = [], False  # "Hey Caroline": after a greeting, a name
            continue
        leading = False
        current.append(word)
        if word != _POSSESSIVE.sub("", word):  # "Caroline's Mom": the possessive ends the name
            yield name(current)
            current, first = [], False
    if current:
        yield name(current)


def extract(text: str) -> list[Mention]:
    """The entities `text` names, each once (its first written form), in the order they first appear."""
    found: dict[str, Mention] = {}

    def add(name: str, key: str | None = None, initial: bool = False) -> None:
        name = name.strip("-’'&")[:MAX_NAME]
        if name.count(" ") >= MAX_WORDS:
            return
        key = (key or entity_key(name))[:MAX_NAME]  # folding case may lengthen it; the column holds MAX_NAME
        if len(key) < 2 and key.isascii():  # one Han character is a name, one letter is not
            return
        seen = found.get(key)
        if seen is None or (seen.initial and not initial):  # a name also seen inside a sentence is no doubt
            found[key] = Mention(name, key, initial)

    if not text:
        return []
    for match in _RUN.finditer(text):
        for name, initial in _names(match.group(), _sentence_start(text, match.start())):
            add(name, initial=initial)
    for match in _HANDLE.finditer(text):
        add("@" + match.group(1), match.group(1).casefold())
    if text.isascii():
        return list(found.values())
    for match in _HONORIFIC.finditer(text):
        name = (match.group(1) or match.group(3)).lstrip("".join(_NOT_NAME))
        if name:
            add(match.group(0).replace(" ", ""), name)
    for match in _KATAKANA.finditer(text):
        add(match.group())
    return list(found.values())


# ----- counts decayed with recency ----------------------------------------------------------------------------


def counted(mentions: Iterable[Mention], known: Callable[[str], bool]) -> list[Mention]:
    """The mentions to count: all but the sentence-initial ones (`Mention.initial`) of entities not `known` yet.
    "Seeing you was fun" names no one, but "Caroline went home" names Caroline once she is known."""
    return [m for m in mentions if not m.initial or known(m.key)]


def _halvings(later: datetime, earlier: datetime) -> float:
    return (later - earlier) / HALF_LIFE


def decayed(weight: float, last_seen: datetime, now: datetime) -> float:
    """The weight an entity ranks by at `now`: its decayed count, halved for every HALF_LIFE since it was last
    mentioned (never raised for a `now` before that)."""
    return weight * 0.5 ** max(0.0, _halvings(now, last_seen))


def mentioned(weight: float, last_seen: datetime | None, at: datetime) -> tuple[float, datetime]:
    """The weight and last-seen time after one more mention at `at`. A mention older than the last one (messages
    recorded out of order) adds what it would be worth by then, so the order of recording does not matter."""
    if last_seen is None:
        return 1.0, at
    if at >= last_seen:
        return decayed(weight, last_seen, at) + 1.0, at
    return weight + 0.5 ** _halvings(last_seen, at), last_seen


def renamed(name: str, aliases: tuple[str, ...], written: str) -> tuple[str, tuple[str, ...]]:
    """An entity's name and aliases after it was written as `written`: the latest form becomes its name (how the
    user writes it now), the one before joins the aliases (most recent first, MAX_ALIASES of them)."""
    if written == name:
        return name, aliases
    kept = tuple(a for a in (name, *aliases) if a != written)
    return written, kept[:MAX_ALIASES]


def ranked(entities: Iterable[Entity], now: datetime) -> list[Entity]:
    """Best first: by weight decayed to `now`. Every weight decays at the same rate, so the order is the same
    at any later time until one of them is mentioned again."""
    return sorted(entities, key=lambda e: (-decayed(e.weight, e.last_seen, now), -e.mentions, e.key))


def merged(entities: Iterable[Entity], now: datetime) -> list[Entity]:
    """One entity per key, ranked at `now`: a private step sees an entity's private and shared rows as one
    (mentions added up; weights added as of the later last-seen time, when the merged one was last seen)."""
    by_key: dict[str, Entity] = {}
    for entity in entities:
        seen = by_key.get(entity.key)
        if seen is None:
            by_key[entity.key] = entity
            continue
        newer, older = (entity, seen) if entity.last_seen >= seen.last_seen else (seen, entity)
        aliases = tuple(dict.fromkeys(a for a in (*newer.aliases, older.name, *older.aliases) if a != newer.name))
        by_key[entity.key] = replace(
            newer, mentions=newer.mentions + older.mentions,
            weight=newer.weight + decayed(older.weight, older.last_seen, newer.last_seen),
            first_seen=min(newer.first_seen, older.first_seen), private=newer.private or older.private,
            aliases=aliases[:MAX_ALIASES])
    return ranked(by_key.values(), now)


@dataclass
class TopEntities:
    """The agent's most talked-about entities as its prompt shows them, kept between steps: those a shared step
    may see (shared rows), and those a private one sees (both scopes merged). Read when the agent loads, then
    updated from what each of its steps recorded: an entity can only climb by being mentioned, and the order of
    the others does not change with time (see `ranked`), so the top `limit` stay exact without a query per
    step."""

    shared: list[Entity]
    everything: list[Entity]
    limit: int

    def update(self, recorded: Sequence[Entity], now: datetime) -> None:
        """Take in the rows a step recorded (both scopes of every entity it touched)."""
        if not recorded:
            return
        shared = [e for e in recorded if not e.private]
        fresh = {e.key for e in shared}
        self.shared = ranked([e for e in self.shared if e.key not in fresh] + shared, now)[: self.limit]
        fresh = {e.key for e in recorded}
        self.everything = ranked([e for e in self.everything if e.key not in fresh] + merged(recorded, now),
                                 now)[: self.limit]

    def seen(self, private: bool) -> list[Entity]:
        return self.everything if private else self.shared


def render_entities(entities: Iterable[Entity], max_tokens: int = PROMPT_TOKENS) -> str:
    """`Caroline (42), Melanie (30), Sweden (3)`: names with their mention counts, in the order given, as many as
    fit in `max_tokens` (counted as the token estimate counts, CHARS_PER_TOKEN). Empty when there are none."""
    # The estimate rounds up by one token; the heading and its line break are paid from the same budget.
    budget = math.floor(max_tokens * CHARS_PER_TOKEN) - 1 - len(ENTITIES_HEADING) - 1
    line = ""
    for entity in entities:
        part = f"{entity.name} ({entity.mentions})"
        candidate = f"{line}, {part}" if line else part
        if len(candidate) > budget:
            break
        line = candidate
    return line
