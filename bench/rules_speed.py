"""CPU time of the rules extractor per chapter (``python -m bench rules_speed``).

The chapter is the sample novel's text, repeated and cut at a sentence end to ``--chars``
characters (8,000 by default: a typical web-novel chapter), extracted ``--runs`` times after
a warm-up (jieba's dictionary is loaded once per process and not counted). Measured with
``time.thread_time``: the CPU the extracting thread spends, which is what a node's other
work waits for while the GIL is held. Printed: median and 90th percentile in ms, per
chapter as it comes from the pipeline (with the book's roster) and without a roster, and
for a book whose roster has ``--roster`` names (the per-novel cache's case).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jieba  # noqa: E402

import kgworker  # noqa: E402
from kgworker.domain.extraction import ChapterInput, ExtractionOptions  # noqa: E402
from kgworker.domain.names import SURNAMES  # noqa: E402
from kgworker.eval.gold import load_novel  # noqa: E402
from kgworker.rules.extractor import RulesExtractor  # noqa: E402
from kgworker.rules.text import load_jieba  # noqa: E402


def chapter_text(chars: int) -> str:
    book = "\n".join(ch.text.strip() for ch in load_novel().chapters)
    text = ""
    while len(text) < chars:
        text += book + "\n"
    cut = max(text.rfind(end, 0, chars) for end in "。！？\n")
    return text[: cut + 1]


def big_roster(size: int) -> list[str]:
    """``size`` distinct made-up three-character names (a long book's cast)."""
    given = "安白长春大德东方飞凤福贵海红华江金静康兰丽林明宁平奇秋荣山顺天伟文霞祥兴秀玉云忠"
    surnames = sorted(SURNAMES)
    names = (s + a + b for s in surnames for a in given for b in given if a != b)
    return [next(names) for _ in range(size)]


def measure(
    extractor: RulesExtractor, chapter: ChapterInput, runs: int, cached: bool = True
) -> list[float]:
    options = ExtractionOptions()

    def once() -> None:
        if cached:
            extractor.extract_chapter(chapter, options)
        else:  # the roster read again for every chapter
            extractor.extract_text(chapter.content, options, roster=chapter.roster)

    once()  # warm-up: dictionary tables, the book's roster
    out = []
    for _ in range(runs):
        start = time.thread_time()
        once()
        out.append((time.thread_time() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=8000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--roster", type=int, default=500)
    args = parser.parse_args()
    load_jieba()
    text = chapter_text(args.chars)
    cast = list(load_novel().registry["character"])
    large = {"characters": cast + big_roster(args.roster)}
    cases = {
        "sample novel, the book's roster": ({"characters": cast}, True),
        "no roster": ({}, True),
        f"a roster of {args.roster} names": (large, True),
        f"a roster of {args.roster} names, read again each chapter (no per-novel cache)": (
            large,
            False,
        ),
    }
    print(
        f"{platform.machine()}, {platform.processor() or 'cpu'}, Python "
        f"{platform.python_version()}, jieba {jieba.__version__}, kgworker {kgworker.__version__}"
    )
    print(f"chapter: {len(text)} characters, {args.runs} runs after a warm-up")
    print("| case | median CPU ms | p90 CPU ms | characters per CPU ms |")
    print("|---|---:|---:|---:|")
    for novel_id, (label, (roster, cached)) in enumerate(cases.items(), start=1):
        chapter = ChapterInput(novel_id, 1, 1, "", text, 1, roster=roster)
        times = sorted(measure(RulesExtractor(), chapter, args.runs, cached))
        median = statistics.median(times)
        p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
        print(f"| {label} | {median:.1f} | {p90:.1f} | {len(text) / median:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
