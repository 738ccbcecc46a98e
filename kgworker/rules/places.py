"""Places and organizations by their last word: …渡/…镇/…寺/…客栈, …帮/…镖局/…商行.

A match starts and ends on jieba word boundaries and its first part holds no function word
(那是铁锚帮 gives 铁锚帮). Reliable suffixes name a place after one mention when the part
before them is two or more characters of nouns (青石渡, 永昌商行); weak ones (…山, …门,
…会) also end ordinary words (后山, 茅房门), so they need two mentions, a quotation
(“归燕客栈”) or the book's roster — as does a first part holding a verb (归燕客栈:
归/v); a verb before one word is that verb's object (走后山, 到货仓). Numbers,
directions, demonstratives and plain adjectives never start one (二楼, 后山, 这座楼,
老客栈); a person's name is never a place (沈青山 is no 山).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kgworker.rules.lexicon import (
    NUMBERED_PLACE,
    ORG_SUFFIXES_RELIABLE,
    ORG_SUFFIXES_WEAK,
    PLACE_BAD_STARTS,
    PLACE_SUFFIXES_RELIABLE,
    PLACE_SUFFIXES_WEAK,
)
from kgworker.rules.text import Tokens, is_cjk

#: Tags of words that cannot be inside a place name (particles, pronouns, adverbs…).
_FUNCTION_TAGS = frozenset(
    ("p", "c", "u", "uj", "ul", "uz", "ug", "uv", "ud", "r", "y", "x", "e", "o", "d", "q", "f",
     "zg", "m", "t")
)
_NUMBERED = re.compile(NUMBERED_PLACE)
_AFTER_VERB = frozenset("来去了着过人出到给上下走完好")
_QUOTES = ("“", "”", "「", "」", "『", "』", "《", "》", '"')
#: suffix → (kind, reliable), longest suffix first.
_SUFFIXES: list[tuple[str, str, bool]] = sorted(
    [(s, "location", True) for s in PLACE_SUFFIXES_RELIABLE]
    + [(s, "location", False) for s in PLACE_SUFFIXES_WEAK]
    + [(s, "organization", True) for s in ORG_SUFFIXES_RELIABLE]
    + [(s, "organization", False) for s in ORG_SUFFIXES_WEAK],
    key=lambda item: -len(item[0]),
)
_ENDINGS = frozenset(s for s, _, _ in _SUFFIXES)


@dataclass(frozen=True)
class Match:
    start: int
    name: str
    kind: str  #: location or organization
    reliable: bool  #: one mention is enough
    forced: bool = False  #: from the config's patterns or the roster


def _suffix_of(name: str) -> tuple[str, str, bool] | None:
    for suffix, kind, reliable in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix, kind, reliable
    return None


def _used_as_verb(words: list[str], flags: list[str], k: int) -> bool:
    """帮/派/会 followed by what follows a verb (来, 了, 人, a pronoun, another verb)."""
    if k + 1 >= len(words):
        return False
    nxt, tag = words[k + 1], flags[k + 1]
    return nxt in _AFTER_VERB or tag.startswith("v") or tag == "r"


def _candidates(text: str, tokens: Tokens) -> list[Match]:
    words, flags, starts = tokens.words, tokens.flags, tokens.starts
    out: list[Match] = []
    for k, word in enumerate(words):
        end = starts[k] + len(word)
        if not (word[-1:] in _ENDINGS or word[-2:] in _ENDINGS or word[-3:] in _ENDINGS):
            continue
        verb = False
        for first in range(k, max(-1, k - 4), -1):
            start = starts[first]
            if end - start > 6:
                break
            if first < k and (flags[first] in _FUNCTION_TAGS or not is_cjk(words[first][0])):
                break
            if first < k and flags[first].startswith("v"):
                verb = True
            name = text[start:end]
            found = _suffix_of(name)
            if found is None or name[0] in PLACE_BAD_STARTS or not all(map(is_cjk, name)):
                continue
            suffix, kind, reliable = found
            if first == k and flags[k] in _FUNCTION_TAGS:
                continue
            verb_suffix = word == suffix and flags[k].startswith("v")
            if verb_suffix and (not reliable or _used_as_verb(words, flags, k)):
                continue  # 水上巡警队会…, 县里派来…: the suffix is a verb here
            quoted = text[start - 1 : start] in _QUOTES and text[end : end + 1] in _QUOTES
            if first == k - 1 and flags[first].startswith("v") and not quoted:
                continue  # 走后山, 到货仓: a verb and the word it acts on
            sure = (reliable and len(name) - len(suffix) >= 2 and not verb) or quoted
            out.append(Match(start, name, kind, sure))
    out += [Match(m.start(), m.group(0), "location", True) for m in _NUMBERED.finditer(text)]
    return out


def _configured(text: str, patterns: Sequence[re.Pattern[str]], kind: str) -> list[Match]:
    out = []
    for pattern in patterns:
        for hit in pattern.finditer(text):
            name = hit.group(1) if pattern.groups else hit.group(0)
            if name:
                out.append(Match(hit.start(), name, kind, True, forced=True))
    return out


def find_places(
    text: str,
    tokens: Tokens,
    *,
    blocked: Iterable[tuple[int, int]],
    known: set[str],
    filters: set[str],
    location_patterns: Sequence[re.Pattern[str]] = (),
    min_mentions: int = 2,
) -> tuple[Counter[str], Counter[str], set[str]]:
    """(location counts, organization counts, forced names) of a chapter.

    ``blocked`` are the spans of people; ``known`` the book's places and organizations
    (the roster): a known name needs one mention.
    """
    found = _configured(text, location_patterns, "location") + _candidates(text, tokens)
    taken = [False] * len(text)
    for start, end in blocked:
        for i in range(start, end):
            taken[i] = True
    counts = Counter(m.name for m in found)
    # Of overlapping matches keep the more frequent string, then the longer
    # (水上巡警队 over 巡警队), configured ones first.
    found.sort(
        key=lambda m: (not m.forced, not m.reliable, -counts[m.name], -len(m.name), m.start)
    )
    kept: list[Match] = []
    for m in found:
        span = range(m.start, m.start + len(m.name))
        if any(taken[i] for i in span):
            continue
        for i in span:
            taken[i] = True
        kept.append(m)
    locations: Counter[str] = Counter()
    organizations: Counter[str] = Counter()
    sure: dict[str, bool] = {}
    forced: set[str] = set()
    for m in kept:
        if m.name in filters:
            continue
        (locations if m.kind == "location" else organizations)[m.name] += 1
        sure[m.name] = sure.get(m.name, False) or m.reliable or m.name in known
        if m.forced:
            forced.add(m.name)
    for table in (locations, organizations):
        for name in list(table):
            if not (sure[name] or table[name] >= min_mentions or name in forced):
                del table[name]
    return locations, organizations, forced
