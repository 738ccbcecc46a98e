"""The quality suites and their targets (issue 6, item 12).

Suites, each over the whole gold novel with one alias table, as the pipeline runs a book:

* ``clean`` — perfect answers: entity and relation F1 must be 1.00;
* ``format`` — every format fault of the fake server (fences, preambles, think blocks,
  trailing commas, single quotes, truncation with ``finish_reason = length``, empty bodies),
  first once each, then drawn at ``format_rate`` each: F1 must still be 1.00, with no
  failed chapter;
* ``content`` — every content fault (aliases, traditional variants, reversed relations,
  hallucinated entities, dangling relations, off-schema types, duplicates), first once
  each, then drawn at ``content_rate`` each (0.3: about nine answers in ten carry one):
  duplicate rate <= 3 %, no over-merge, no dangling relation written;
* ``rules`` — the offline extractor (:mod:`kgworker.rules`): character precision >= 0.95,
  entity F1 >= 0.85, >= 80 % of the gold aliases merged with no wrong merge, character
  relation F1 >= 0.45.

Every suite must also write no dangling relation; the rules suite must find the novel's
main characters (the model suites are held to more: F1 = 1.00, or no duplicate).
The numbers live in :mod:`kgworker.eval.thresholds`; :func:`render_text` prints each with
its measured value and the suite's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgworker.domain.chunking import DEFAULT_CHUNK_BUDGET
from kgworker.eval.faults import CONTENT, FORMAT
from kgworker.eval.gold import GoldNovel, load_novel
from kgworker.eval.metrics import PRF, Report, score
from kgworker.eval.runner import GoldModelExtractor, clean_ask, fault_ask, run_novel
from kgworker.eval.thresholds import MAX_DUPLICATE_RATE, checks, failures
from kgworker.rules.extractor import RulesExtractor

FORMAT_FAULTS = FORMAT  #: the answer-format faults of the fault injector
CONTENT_FAULTS = CONTENT  #: its content faults
SUITES = ("clean", "format", "content", "rules")
__all__ = ["MAX_DUPLICATE_RATE", "SUITES", "SuiteResult", "evaluate", "render_text", "run_suite"]


@dataclass
class SuiteResult:
    name: str
    report: Report
    recovery: dict[str, float] = field(default_factory=dict)
    faults_seen: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    main_characters_missed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            **self.report.summary(),
            "parse_recovery": self.recovery,
            "faults_seen": self.faults_seen,
            "llm_calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "main_characters_missed": self.main_characters_missed,
            "verdict": "pass" if not self.failures else "fail",
            "thresholds": [
                {"check": text, "met": ok} for ok, text in checks(self.name, self.report)
            ],
            "target_failures": self.failures,
        }


def _targets(result: SuiteResult) -> list[str]:
    """The thresholds the suite misses (empty: it passes)."""
    return failures(result.name, result.report)


async def run_suite(
    name: str,
    novel: GoldNovel,
    *,
    seed: int = 1,
    format_rate: float = 0.1,
    content_rate: float = 0.3,
    chunk_tokens: int = DEFAULT_CHUNK_BUDGET,
) -> SuiteResult:
    """Run one suite and check its targets (``result.failures`` empty = met)."""
    if name == "rules":
        run = await run_novel(RulesExtractor(), novel)
        result = SuiteResult(name, score(novel, run))
        result.main_characters_missed = result.report.main_characters_missed
        result.failures = _targets(result)
        return result
    if name == "clean":
        ask = clean_ask(novel)
    elif name == "format":
        ask = fault_ask(dict.fromkeys(FORMAT_FAULTS, format_rate), seed, novel, FORMAT_FAULTS)
    elif name == "content":
        ask = fault_ask(dict.fromkeys(CONTENT_FAULTS, content_rate), seed, novel, CONTENT_FAULTS)
    else:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    extractor = GoldModelExtractor(ask, chunk_tokens=chunk_tokens)
    run = await run_novel(extractor, novel)
    result = SuiteResult(
        name,
        score(novel, run),
        recovery={f: round(v, 4) for f, v in extractor.tally.rates().items() if f in FORMAT_FAULTS},
        faults_seen=dict(sorted(extractor.tally.seen.items())),
        calls=extractor.calls,
        prompt_tokens=extractor.prompt_tokens,
        completion_tokens=extractor.completion_tokens,
    )
    result.main_characters_missed = result.report.main_characters_missed
    result.failures = _targets(result)
    return result


async def evaluate(
    suites: tuple[str, ...] = SUITES,
    novel_dir: Path | str | None = None,
    **options: Any,
) -> list[SuiteResult]:
    novel = load_novel(novel_dir)
    return [await run_suite(name, novel, **options) for name in suites]


def _prf(label: str, prf: PRF) -> str:
    return f"{label} P={prf.precision:.4f} R={prf.recall:.4f} F1={prf.f1:.4f}"


def render_text(results: list[SuiteResult]) -> str:
    """A compact human-readable report: per suite its verdict, scores and thresholds."""
    lines = []
    for res in results:
        r = res.report
        verdict = checks(res.name, r)
        met = sum(ok for ok, _ in verdict)
        lines.append(
            f"[{res.name}] {'PASS' if met == len(verdict) else 'FAIL'}"
            f" ({met}/{len(verdict)} thresholds met)"
        )
        kinds = "  ".join(
            _prf(t, prf) for t, prf in r.by_type.items() if prf.tp + prf.fp + prf.fn
        )
        lines.append(f"  {_prf('entities ', r.entities)}   by type: {kinds}")
        lines.append(
            f"  aliases   merged {len(r.aliases.merged)}/{r.aliases.gold} "
            f"({r.aliases.recall:.4f})  wrong {r.wrong_merges}"
        )
        lines.append(
            f"  {_prf('relations', r.relations)}   {_prf('character', r.character_relations)}"
            f"   {_prf('pairs', r.character_pairs)}"
        )
        lines.append(
            f"  duplicate rate {r.duplicate_rate:.2%} ({len(r.duplicates)}/{r.distinct_entities})"
            f"  spurious {len(r.spurious)}"
            f"  dangling dropped {r.dangling_dropped}  dangling written {r.dangling_written}"
        )
        if res.calls:
            lines.append(
                f"  calls {res.calls}  tokens prompt {res.prompt_tokens} "
                f"completion {res.completion_tokens}"
            )
        if res.recovery:
            rec = "  ".join(
                f"{f} {v:.0%} ({res.faults_seen.get(f, 0)})" for f, v in res.recovery.items()
            )
            lines.append(f"  parse recovery: {rec}")
        elif res.faults_seen:
            lines.append(f"  faults injected: {res.faults_seen}")
        for ok, text in verdict:
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {text}")
    return "\n".join(lines)
