"""Run an extractor plus entity resolution over the gold novel, the way the pipeline would.

Why a model-free extractor here: the quality numbers must be reproducible offline, in CI,
in a second. :class:`GoldModelExtractor` is the LLM path without HTTP: chunking, the real
answer parser and validator of :mod:`kgworker.llm.parsing` (strip, repair, prune), a split
and re-ask when an answer is cut at max_tokens, a re-ask when it is unusable, and the merge of
chunk results. The answers come from an ``ask`` callable: the gold answer, optionally passed
through the fake LLM's fault injector (:mod:`kgworker.eval.faults`) by :func:`fault_ask`.
The real HTTP path (fake server + ``LLMExtractor``) is run by ``bench/quality.py --via server``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kgworker.domain.chunking import DEFAULT_CHUNK_BUDGET, estimate_tokens, split_into_chunks
from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    ExtractionError,
    ExtractionOptions,
    Extractor,
    merge_extractions,
)
from kgworker.domain.names import name_key
from kgworker.domain.resolution import KINDS, AliasTable, resolve_with_map
from kgworker.eval import faults
from kgworker.eval.gold import GoldNovel, gold_answer

#: (chunk text) → (raw answer text, finish_reason, faults injected into it).
Ask = Callable[[str], tuple[str, str, tuple[str, ...]]]
MAX_SPLIT_DEPTH = 3
PARSE_RETRIES = 2


def clean_ask(novel: GoldNovel | None = None) -> Ask:
    """The gold answer as a well-formed JSON text."""

    def ask(text: str) -> tuple[str, str, tuple[str, ...]]:
        return json.dumps(gold_answer(text, novel), ensure_ascii=False), "stop", ()

    return ask


def fault_ask(
    rates: dict[str, float],
    seed: int = 0,
    novel: GoldNovel | None = None,
    script: tuple[str, ...] = (),
) -> Ask:
    """The gold answer through the fake LLM server's seeded fault injector.

    ``script`` gives the first answers one fault each (so every fault type is exercised),
    then faults are drawn at ``rates``.
    """
    plan = faults.FaultPlan(rates=rates, seed=seed)
    plan.script(*script)
    rng = random.Random(seed + 1)

    def ask(text: str) -> tuple[str, str, tuple[str, ...]]:
        drawn = tuple(plan.draw())
        answer = faults.apply_content(gold_answer(text, novel), drawn, rng)
        raw, finish = faults.render(answer, drawn)
        return str(raw), str(finish), drawn

    return ask


@dataclass
class FaultTally:
    """Per fault type: answers that carried it, and how many of those were recovered."""

    seen: Counter[str] = field(default_factory=Counter)
    recovered: Counter[str] = field(default_factory=Counter)

    def rates(self) -> dict[str, float]:
        return {f: self.recovered[f] / n for f, n in sorted(self.seen.items()) if n}


class GoldModelExtractor:
    """An :class:`Extractor` whose "model" is ``ask``; parsing is the production code's."""

    def __init__(self, ask: Ask, *, chunk_tokens: int = DEFAULT_CHUNK_BUDGET) -> None:
        from kgworker.llm import prompts

        self.ask = ask
        self.chunk_tokens = chunk_tokens
        self.schema = prompts.Schema()
        self.tally = FaultTally()
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        parts: list[ChapterExtraction] = []
        for chunk in split_into_chunks(chapter.content, self.chunk_tokens):
            parts += self._piece(chapter, chunk.text, 0)
        return merge_extractions(parts) if parts else ChapterExtraction()

    def _piece(self, chapter: ChapterInput, text: str, depth: int) -> list[ChapterExtraction]:
        from kgworker.llm import prompts
        from kgworker.llm.extractor import chinese_name_key
        from kgworker.llm.parsing import (
            TruncatedAnswer,
            UnparseableAnswer,
            load_answer,
            validate_extraction,
        )

        roster = [n for names in chapter.roster.values() for n in names]
        messages = prompts.single_messages(chapter.title, text, self.schema, chapter.roster)
        pending: list[str] = []
        for _ in range(PARSE_RETRIES + 1):
            raw, finish, faults = self.ask(text)
            self.calls += 1
            self.prompt_tokens += sum(estimate_tokens(m["content"]) for m in messages)
            self.completion_tokens += estimate_tokens(raw)
            self.tally.seen.update(faults)
            pending += faults
            try:
                parsed = load_answer(raw, finish)
            except TruncatedAnswer:
                pieces = split_into_chunks(text, estimate_tokens(text) // 2 + 1)
                if depth >= MAX_SPLIT_DEPTH or len(pieces) < 2:
                    raise ExtractionError(
                        "answer cut at max_tokens even for a small chunk"
                    ) from None
                out: list[ChapterExtraction] = []
                for piece in pieces:
                    out += self._piece(chapter, piece.text, depth + 1)
                self.tally.recovered.update(pending)
                return out
            except UnparseableAnswer:
                continue
            self.tally.recovered.update(pending)
            return [
                validate_extraction(
                    parsed.data, self.schema, text, roster=roster, name_key=chinese_name_key
                )
            ]
        raise ExtractionError("unusable answer after re-asking")


@dataclass
class ChapterRun:
    number: int
    raw: ChapterExtraction
    resolved: ChapterExtraction
    mapping: dict[tuple[str, str], str]
    #: (type, name key) of entities known before this chapter.
    known_before: set[tuple[str, str]]
    error: str = ""


@dataclass
class NovelRun:
    chapters: list[ChapterRun]
    table: AliasTable


async def run_novel(
    extractor: Extractor, novel: GoldNovel, options: ExtractionOptions | None = None
) -> NovelRun:
    """Extract and resolve every chapter in order, with one alias table (as the pipeline)."""
    options = options or ExtractionOptions(provider="gold")
    table = AliasTable()
    runs: list[ChapterRun] = []
    for chapter in novel.chapters:
        known = {(etype, name_key(n)) for _, etype in KINDS for n in table.entities(etype)}
        data = ChapterInput(
            novel_id=0,
            chapter_id=chapter.number,
            chapter_number=chapter.number,
            title=chapter.title,
            content=chapter.text,
            task_id=0,
            roster=table.roster(),
        )
        try:
            raw = await extractor.extract(data, options)
        except ExtractionError as exc:
            empty = ChapterExtraction()
            runs.append(ChapterRun(chapter.number, empty, empty, {}, known, exc.reason))
            continue
        resolution = resolve_with_map(raw, table)
        table.mark_saved()
        runs.append(
            ChapterRun(chapter.number, raw, resolution.extraction, resolution.mapping, known)
        )
    return NovelRun(runs, table)


def describe(value: Any) -> str:
    """Short JSON for reports."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
