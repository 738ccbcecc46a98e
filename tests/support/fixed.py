"""A deterministic extractor: its result is a pure function of the chapter, no model involved.

Why: tests and benchmarks of the pipeline need known graph content, repeatable across
processes and runs, and an "instant" extractor to measure everything but the model. It
reads a small fixed lexicon out of the text (names, places, organizations), relations from
keywords in the sentence that names two characters, and events from "发生了…" sentences.
``chunk_budget`` makes it extract piecewise through the real chunker and merge the parts,
like the LLM extractor does for long chapters. :func:`sample_chapter` writes matching text.

Markers: a chapter containing ``【无法解析】`` fails (not retryable), ``【暂时失败】`` fails
retryably; ``delay`` seconds are slept per call (to make chapters overlap in tests).
"""

from __future__ import annotations

import asyncio
import random
import re
from itertools import pairwise

from kgworker.domain.chunking import split_into_chunks
from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    Character,
    CharacterRelation,
    Event,
    EventRelation,
    ExtractionError,
    ExtractionOptions,
    LocationRelation,
    Place,
    merge_extractions,
)

CHARACTERS = ("林风", "苏晴", "王虎", "陈默", "赵雪", "李长老", "白衣人", "小青")
LOCATIONS = ("青云山", "长安城", "落霞镇", "幽冥谷")
ORGANIZATIONS = ("青云门", "天剑宗", "黑风寨")
#: Keyword in a sentence → the relation the extractor reports (some are not allowed types,
#: to exercise mapping; "擦肩而过" maps to nothing and is dropped).
RELATION_WORDS = (
    ("结为好友", "朋友"), ("拜为师父", "师父"), ("大打出手", "ENEMY"), ("暗生情愫", "LOVES"),
    ("恨之入骨", "恨"), ("听命于", "FOLLOWS"), ("擦肩而过", "路人"),
)
FAIL_MARK = "【无法解析】"
RETRY_MARK = "【暂时失败】"

_SENTENCE = re.compile(r"[^。！？]+[。！？]?")
_EVENT = re.compile(r"发生了([^，。！？]{1,20})")


class FixedExtractor:
    """Deterministic :class:`~kgworker.domain.extraction.Extractor` for tests and benchmarks."""

    def __init__(self, *, chunk_budget: int | None = None, delay: float = 0.0) -> None:
        self.chunk_budget = chunk_budget
        self.delay = delay
        self.calls = 0

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        if FAIL_MARK in chapter.content:
            raise ExtractionError("fixed extractor: unparseable chapter")
        if RETRY_MARK in chapter.content:
            raise ExtractionError("fixed extractor: transient failure", retryable=True)
        if self.chunk_budget is None:
            texts = [chapter.content]
        else:
            texts = [c.text for c in split_into_chunks(chapter.content, self.chunk_budget, 0)]
        parts = []
        for text in texts or [""]:
            self.calls += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            parts.append(extract_text(text, chapter.chapter_number))
        result = merge_extractions(parts)
        result.extracted_by = "ai" if options.provider != "rules" else "rule"
        return result


def _found(text: str, lexicon: tuple[str, ...]) -> list[str]:
    hits = [(text.find(name), name) for name in lexicon if name in text]
    return [name for _, name in sorted(hits)]


def extract_text(text: str, chapter_number: int) -> ChapterExtraction:
    """The extraction of one piece of text; chunk-invariant except for cut sentences."""
    result = ChapterExtraction()
    for name in _found(text, CHARACTERS):
        index = CHARACTERS.index(name)
        score = 90.0 if index == 0 else float(10 * (index % 5))
        result.characters.append(Character(
            name=name, description=f"{name}在第{chapter_number}章出场",
            traits=[("勇敢", "聪慧", "冷静", "暴躁")[index % 4]], title=("", "少侠")[index % 2],
            is_protagonist=score >= 80, protagonist_score=score,
            protagonist_reasons=["出场最多"] if score >= 80 else [],
        ))
    result.locations = [Place(name=n, description=f"{n}一带", type="地点")
                        for n in _found(text, LOCATIONS)]
    result.organizations = [Place(name=n, description=f"{n}的门人", type="门派")
                            for n in _found(text, ORGANIZATIONS)]
    for sentence in _SENTENCE.findall(text):
        people = _found(sentence, CHARACTERS)
        relation = next((rel for word, rel in RELATION_WORDS if word in sentence), "认识")
        for source, target in pairwise(people):
            result.character_relationships.append(CharacterRelation.model_validate({
                "from": source, "to": target, "relation": relation,
                "description": sentence.strip()[:40], "strength": 0.5 + 0.1 * len(people),
            }))
        match = _EVENT.search(sentence)
        if match:
            name = match.group(1)
            result.events.append(Event(name=name, description=sentence.strip()[:60],
                                       importance="中", participants=people))
            result.event_relationships += [
                EventRelation(character=p, event=name, role="参与者") for p in people
            ]
            places = _found(sentence, LOCATIONS)
            if places:
                result.location_relationships.append(
                    LocationRelation(event=name, location=places[0]))
    return merge_extractions([result, ChapterExtraction()])


_TEMPLATES = (
    "{a}与{b}在{place}{word}。",
    "{a}独自走过{place}，想起{org}的往事。",
    "那一日，{place}发生了{event}，{a}和{b}都在场。",
    "{a}向{b}{word}，{c}在一旁看着。",
    "风吹过{place}，无人说话。",
)
_EVENTS = ("比武大会", "山门失火", "夜袭", "婚宴", "秘宝现世")


def sample_chapter(number: int, *, seed: int = 7, sentences: int = 8) -> str:
    """Chapter text the fixed extractor understands; same arguments, same text."""
    rng = random.Random(seed * 100_003 + number)
    out = []
    for _ in range(sentences):
        a, b, c = rng.sample(CHARACTERS, 3)
        out.append(rng.choice(_TEMPLATES).format(
            a=a, b=b, c=c, place=rng.choice(LOCATIONS), org=rng.choice(ORGANIZATIONS),
            word=rng.choice(RELATION_WORDS)[0], event=rng.choice(_EVENTS),
        ))
    return "".join(out)
