"""What each quality suite must reach, stated as numbers, and the verdict against them.

Why a table: ``kgworker eval`` used to print "OK" for any score a suite had no target for
(the rules extractor's relation F1 of 0.11 was "OK"). Every suite now has its thresholds
here, each printed with the measured value; a suite passes only when all are met, and the
command exits 1 when one is not.

The rules suite is judged on character relations, not on all relations: the gold
annotations hang more than half of the novel's relations (PARTICIPATES_IN, OCCURS_IN) on
event nodes named by the annotator, which the rules extractor does not write (see
:mod:`kgworker.rules.extractor`), so its recall over all relations cannot exceed 0.45.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from kgworker.eval.metrics import Report

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}
_SHOWN = {">=": "≥", "<=": "≤", "==": "="}


@dataclass(frozen=True)
class Threshold:
    label: str
    op: str
    value: float
    measure: Callable[[Report], float]
    percent: bool = False

    def actual(self, report: Report) -> float:
        return float(self.measure(report))

    def met(self, report: Report) -> bool:
        return _OPS[self.op](round(self.actual(report), 4), self.value)

    def describe(self, report: Report) -> str:
        got, want = self.actual(report), self.value
        if self.percent:
            return f"{self.label} {got:.2%} {_SHOWN[self.op]} {want:.0%}"
        if want == int(want) and self.op == "==":
            return f"{self.label} {got:g} {_SHOWN[self.op]} {want:g}"
        return f"{self.label} {got:.4f} {_SHOWN[self.op]} {want:.2f}"


def _t(label: str, op: str, value: float, measure: Callable[[Report], float],
       percent: bool = False) -> Threshold:
    return Threshold(label, op, value, measure, percent)


_ALWAYS = (_t("dangling relations written", "==", 0, lambda r: r.dangling_written),)
_PERFECT = (
    _t("entity F1", ">=", 1.0, lambda r: r.entities.f1),
    _t("relation F1", ">=", 1.0, lambda r: r.relations.f1),
    _t("failed chapters", "==", 0, lambda r: len(r.failed_chapters)),
    *_ALWAYS,
)
MAX_DUPLICATE_RATE = 0.03

THRESHOLDS: dict[str, tuple[Threshold, ...]] = {
    "clean": _PERFECT,
    "format": _PERFECT,
    "content": (
        _t("duplicate rate", "<=", MAX_DUPLICATE_RATE, lambda r: r.duplicate_rate, percent=True),
        _t("wrong merges", "==", 0, lambda r: r.wrong_merges),
        *_ALWAYS,
    ),
    "rules": (
        _t("character precision", ">=", 0.95, lambda r: r.by_type["character"].precision),
        _t("entity F1", ">=", 0.85, lambda r: r.entities.f1),
        _t("gold aliases merged", ">=", 0.80, lambda r: r.aliases.recall),
        _t("wrong merges", "==", 0, lambda r: r.wrong_merges),
        _t("character relation F1", ">=", 0.45, lambda r: r.character_relations.f1),
        _t("main characters missed", "==", 0, lambda r: len(r.main_characters_missed)),
        *_ALWAYS,
    ),
}


def failures(suite: str, report: Report) -> list[str]:
    """The thresholds ``report`` misses, described with their measured values."""
    return [t.describe(report) for t in THRESHOLDS.get(suite, _ALWAYS) if not t.met(report)]


def checks(suite: str, report: Report) -> list[tuple[bool, str]]:
    """Every threshold of ``suite``: (met?, description)."""
    return [(t.met(report), t.describe(report)) for t in THRESHOLDS.get(suite, _ALWAYS)]
