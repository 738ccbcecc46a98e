"""The ``rules`` extractor: no model, no API key, for ``use_ai = false`` tasks and demos.

What it does (docs/chaishu-compat.md §4, improved): the config's ``character_patterns`` and
``location_patterns`` regexes minus ``filter_words``, plus jieba part-of-speech tags (nr
person, ns place, nt organization), plus three repairs jieba needs on fiction:

* a one-character surname followed by a short token is one name (jieba reads 沈青山 as
  沈 + 青山/ns);
* places and organizations are recognised by their last word (…客栈, …楼, …洲, …帮,
  …商行) when the match starts and ends on jieba word boundaries and starts with a noun,
  so 那是铁锚帮 yields 铁锚帮 and not 那是铁锚帮;
* a person name must start with a common surname (or 阿/小/老 + surname) and be seen at
  least ``min_mentions`` times in the chapter, unless a configured pattern found it.

Relations: characters co-occurring within ``window`` sentences KNOW each other, with a
strength growing with the count (count / 5, at most 1). Results are ``extracted_by="rule"``;
the graph writer gives rule results confidence 0.7 (docs/chaishu-compat.md §3). jieba loads its
dictionary (about a second) once per process, in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    Character,
    CharacterRelation,
    ExtractionOptions,
    Place,
)
from kgworker.domain.names import HONORIFIC_SUFFIXES, SURNAMES, display_name, is_generic

DEFAULT_LOCATION_PATTERNS = (
    r"[0-9]+号(?:货仓|仓库|码头|楼|院)",
    r"\w{1,4}?(?:客栈|酒楼|茶楼|楼|庙|洲|渡|镇|村|城|寺|庄|岛|湖|府|宫|山|谷|峰|关|港|巷|街)",
)
DEFAULT_ORGANIZATION_PATTERNS = (
    r"\w{1,4}?(?:帮|派|门|会|教|宗|盟|阁|镖局|商行|商号|公司|巡警队|警队|衙门|书院)",
)
_NOUNISH = frozenset({"n", "nr", "nrfg", "nrt", "ns", "nt", "nz", "ng", "s", "j", "b", "l"})
_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?\n]*")
_LIST_KEYS = {
    "人物": "characters",
    "character": "characters",
    "characters": "characters",
    "person": "characters",
    "地点": "locations",
    "location": "locations",
    "locations": "locations",
    "place": "locations",
    "组织": "organizations",
    "organization": "organizations",
    "organizations": "organizations",
}

_jieba_lock = threading.Lock()
_jieba_ready = False


def _load_jieba() -> None:
    global _jieba_ready
    with _jieba_lock:
        if not _jieba_ready:
            import jieba

            jieba.setLogLevel(60)
            jieba.initialize()
            _jieba_ready = True


async def ensure_jieba() -> None:
    """Load jieba's dictionary once per process, off the event loop."""
    if not _jieba_ready:
        await asyncio.to_thread(_load_jieba)


@dataclass(frozen=True)
class _Token:
    word: str
    flag: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.word)


def _tokens(text: str) -> list[_Token]:
    import jieba.posseg

    _load_jieba()
    out: list[_Token] = []
    pos = 0
    for pair in jieba.posseg.cut(text):
        out.append(_Token(pair.word, pair.flag, pos))
        pos += len(pair.word)
    return out


def _compile(patterns: Iterable[Any]) -> list[re.Pattern[str]]:
    return [re.compile(str(p)) for p in patterns if str(p).strip()]


class RulesExtractor:
    """:class:`~kgworker.domain.extraction.Extractor` using regexes and jieba; see module doc."""

    def __init__(self, *, window: int = 1, min_mentions: int = 2) -> None:
        self.window = window
        self.min_mentions = min_mentions

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        await ensure_jieba()
        return await asyncio.to_thread(self.extract_text, chapter.content, options)

    def extract_text(self, text: str, options: ExtractionOptions) -> ChapterExtraction:
        """The synchronous core (CPU-bound: call it off the event loop)."""
        if not options.enable_entity_extraction:
            return ChapterExtraction(extracted_by="rule")
        text = unicodedata.normalize("NFKC", text)
        cfg = options.rule_config or {}
        filters = {display_name(str(w)) for w in cfg.get("filter_words") or []}
        wanted = {_LIST_KEYS.get(str(t).strip().lower()) for t in options.entity_types}
        wanted = {w for w in wanted if w} or {"characters", "locations", "organizations"}
        tokens = _tokens(text)
        starts = {t.start: t for t in tokens}
        ends = {t.end for t in tokens}

        def spans(patterns: Sequence[re.Pattern[str]], anchored: bool) -> list[tuple[int, str]]:
            found: list[tuple[int, str]] = []
            for pattern in patterns:
                if not anchored:
                    for hit in pattern.finditer(text):
                        found.append((hit.start(), hit.group(1) if hit.groups() else hit.group(0)))
                    continue
                for tok in tokens:
                    if tok.flag not in _NOUNISH and not tok.word.isdigit():
                        continue
                    m = pattern.match(text, tok.start)
                    if (
                        m is not None
                        and m.end() in ends
                        and self._nounish_inside(starts, m.start(), m.end())
                    ):
                        found.append((m.start(), m.group(0)))
            return found

        candidates = self._person_tokens(tokens)
        merged = [(a, n) for a, n, two in candidates if two]

        def keep(found: list[tuple[int, str]]) -> list[tuple[int, str]]:
            """Drop matches overlapping a surname+name pair (沈青山 is not a 山); of overlapping
            matches keep the more frequent string, then the longer (铁锚帮 over 少管铁锚帮,
            水上巡警队 over 巡警队)."""
            found = [
                (a, n)
                for a, n in found
                if not any(a < b + len(m) and b < a + len(n) for b, m in merged)
            ]
            found.sort(key=lambda f: (-text.count(f[1]), -len(f[1])))
            taken: set[int] = set()
            out: list[tuple[int, str]] = []
            for a, n in found:
                span = set(range(a, a + len(n)))
                if not span & taken:
                    taken |= span
                    out.append((a, n))
            return out

        location_cfg = spans(_compile(cfg.get("location_patterns") or []), False)
        places = keep(location_cfg + spans(_compile(DEFAULT_LOCATION_PATTERNS), True))
        orgs = keep(spans(_compile(DEFAULT_ORGANIZATION_PATTERNS), True))
        taken = self._claim(places + orgs)
        people_cfg = spans(_compile(cfg.get("character_patterns") or []), False)
        people = people_cfg + [
            (start, name)
            for start, name, _ in candidates
            if not any(taken.get(i) for i in range(start, start + len(name)))
        ]
        forced = {display_name(n) for _, n in people_cfg + location_cfg}
        char_counts = self._counts(people, filters, people=True)
        chars = [n for n, c in char_counts.most_common() if c >= self.min_mentions or n in forced]
        given = {c[1:] for c in chars if len(c) >= 3}
        place_counts = self._counts(places, filters | set(chars) | given)
        locs = [n for n, c in place_counts.most_common() if c >= self.min_mentions or n in forced]
        org_counts = self._counts(orgs, filters | set(chars) | given)
        org_names = [n for n, c in org_counts.most_common() if c >= self.min_mentions]
        result = ChapterExtraction(extracted_by="rule")
        if "characters" in wanted:
            top = chars[0] if chars else None
            result.characters = [
                Character(
                    name=n,
                    description=f"本章出现{char_counts[n]}次",
                    is_protagonist=n == top and char_counts[n] >= 3,
                    protagonist_score=min(100.0, 80.0 * char_counts[n] / char_counts[top])
                    if top
                    else 0.0,
                    protagonist_reasons=["出场次数最多"] if n == top else [],
                )
                for n in chars
            ]
        if "locations" in wanted:
            result.locations = [Place(name=n, type="地点") for n in locs]
        if "organizations" in wanted:
            result.organizations = [Place(name=n, type="组织") for n in org_names]
        if options.enable_relation_extraction and "characters" in wanted:
            result.character_relationships = self._cooccurrence(text, chars)
        return result

    @staticmethod
    def _nounish_inside(starts: dict[int, _Token], begin: int, end: int) -> bool:
        """Every token of the match but the last (the suffix word) must be noun-like."""
        pos = begin
        while pos < end:
            tok = starts.get(pos)
            if tok is None:
                return False
            if tok.end < end and tok.flag not in _NOUNISH and not tok.word.isdigit():
                return False
            pos = tok.end
        return True

    @staticmethod
    def _claim(found: Iterable[tuple[int, str]]) -> dict[int, bool]:
        taken: dict[int, bool] = {}
        for start, name in found:
            for i in range(start, start + len(name)):
                taken[i] = True
        return taken

    @staticmethod
    def _person_tokens(tokens: Sequence[_Token]) -> list[tuple[int, str, bool]]:
        """(start, name, is_surname_pair) for jieba persons and surname + short-token pairs."""
        out: list[tuple[int, str, bool]] = []
        skip = False
        for i, tok in enumerate(tokens):
            if skip:
                skip = False
                continue
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if (
                len(tok.word) == 1
                and tok.word in SURNAMES
                and nxt is not None
                and 1 <= len(nxt.word) <= 2
                and (nxt.flag in _NOUNISH or nxt.flag.startswith("nr"))
                and nxt.word not in HONORIFIC_SUFFIXES
            ):
                out.append((tok.start, tok.word + nxt.word, True))
                skip = True
            elif tok.flag.startswith("nr") and len(tok.word) >= 2:
                out.append((tok.start, tok.word, False))
        return out

    @staticmethod
    def _counts(
        found: Iterable[tuple[int, str]], filters: set[str], people: bool = False
    ) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _, raw in found:
            name = display_name(raw)
            if len(name) < 2 or name in filters or is_generic(name):
                continue
            body = name[1:] if name[0] in "阿小老" and len(name) > 2 else name
            if people and body[0] not in SURNAMES and not raw.isascii():
                continue
            counts[name] += 1
        return counts

    def _cooccurrence(self, text: str, names: Sequence[str]) -> list[CharacterRelation]:
        sentences = [m.group(0) for m in _SENTENCE.finditer(text)]
        pairs: Counter[tuple[str, str]] = Counter()
        ordered = sorted(names, key=len, reverse=True)
        for i in range(len(sentences)):
            window = "".join(sentences[i : i + self.window])
            present: list[str] = []
            for name in ordered:
                if name in window and not any(name in longer for longer in present):
                    present.append(name)
            for a, b in combinations(sorted(present, key=window.find), 2):
                pairs[(a, b)] += 1
        return [
            CharacterRelation.model_validate(
                {
                    "from": a,
                    "to": b,
                    "relation": "KNOWS",
                    "description": f"同一{self.window}句内共同出现{count}次",
                    "strength": round(min(1.0, count / 5), 2),
                }
            )
            for (a, b), count in pairs.most_common()
        ]
