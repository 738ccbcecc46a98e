"""Chapter text as the rules extractor sees it: normalised, tokenised, cut into units.

Why jieba without its HMM: the dictionary pass (a DAG over known words, each with its
dictionary part-of-speech tag) costs ~20 ms per 8,000 characters; the HMM that guesses
unknown words and re-tags them costs ~15 times that, and its guesses on fiction are what
produced "characters" like 沙滩. Unknown names then come out as single characters
(沈/青山, 赵/铁/生), which :mod:`kgworker.rules.people` puts back together from evidence.
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

_jieba_lock = threading.Lock()
_jieba_ready = False

_SENTENCE = re.compile(r"[^。！？!?…\n]+[。！？!?…]*[”’」』]?")


def load_jieba() -> None:
    """Load jieba's dictionary (about a second, once per process)."""
    global _jieba_ready
    with _jieba_lock:
        if not _jieba_ready:
            import jieba
            import jieba.posseg

            jieba.setLogLevel(60)
            jieba.initialize()
            _jieba_ready = True


async def ensure_jieba() -> None:
    """Load jieba's dictionary once per process, off the event loop."""
    if not _jieba_ready:
        await asyncio.to_thread(load_jieba)


@cache
def _dictionary() -> tuple[dict[str, int], dict[str, str]]:
    import jieba
    import jieba.posseg

    load_jieba()
    return jieba.dt.FREQ, jieba.posseg.dt.word_tag_tab


def dictionary_tag(word: str) -> str | None:
    """jieba's dictionary tag of a word (``n``, ``nr``, ``v``…), None if it is no word."""
    freq, tags = _dictionary()
    return tags.get(word) if freq.get(word) else None


def dictionary_freq(word: str) -> int:
    return _dictionary()[0].get(word) or 0


#: Frequent characters that only traditional script writes (們, 這, 說…): a text where they
#: are common is read in simplified script, so the lexicons and jieba's dictionary apply.
_TRADITIONAL = frozenset(
    "們這個說為來時會對國過還與後麼裡點開樣問門見長頭動經發當從現無實種進話關間體學東車馬"
    "鳥電聽講讓覺變認應該氣邊號裏遠總麗愛歲張錢鐵"
)


def normalise(text: str) -> str:
    """NFKC (full-width digits and punctuation to their plain forms: ３号 → 3号), and
    traditional → simplified when traditional script is more than a quoted word or two."""
    text = unicodedata.normalize("NFKC", text)
    if sum(c in _TRADITIONAL for c in text) * 200 > len(text):
        from kgworker.domain.names import to_simplified

        text = to_simplified(text)
    return text


def is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


@dataclass(frozen=True)
class Tokens:
    """jieba's words of a text with their tags and offsets."""

    words: list[str]
    flags: list[str]
    starts: list[int]
    #: offset → index of the token starting there
    at: dict[int, int]

    def after(self, offset: int) -> int | None:
        """Index of the token that starts at ``offset`` (None: a token spans it)."""
        return self.at.get(offset)


def tokenize(text: str) -> Tokens:
    import jieba.posseg

    load_jieba()
    words: list[str] = []
    flags: list[str] = []
    starts: list[int] = []
    pos = 0
    for pair in jieba.posseg.cut(text, HMM=False):
        words.append(pair.word)
        flags.append(pair.flag)
        starts.append(pos)
        pos += len(pair.word)
    return Tokens(words, flags, starts, {s: i for i, s in enumerate(starts)})


@dataclass(frozen=True)
class Units:
    """Where people can be said to meet: sentences, and dialogue exchanges (two adjacent
    paragraphs of mostly quoted speech: the speakers answer each other)."""

    sentences: list[tuple[int, int]]
    exchanges: list[tuple[int, int]]


def units(text: str) -> Units:
    sentences = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]
    paragraphs: list[tuple[int, int, bool]] = []
    pos = 0
    for line in text.split("\n"):
        if line.strip():
            paragraphs.append((pos, pos + len(line), _mostly_quoted(line)))
        pos += len(line) + 1
    exchanges = [(a[0], b[1]) for a, b in pairwise(paragraphs) if a[2] and b[2]]
    return Units(sentences, exchanges)


def _mostly_quoted(line: str) -> bool:
    """At least half of the paragraph is inside quotation marks: a line of dialogue."""
    inside = quoted = 0
    for char in line:
        if char in "“「『":
            inside = 1
        quoted += inside
        if char in "”」』":
            inside = 0
    return quoted * 2 >= len(line)


def find_all(text: str, surfaces: dict[str, str]) -> list[tuple[int, int, str]]:
    """Non-overlapping occurrences of ``surfaces`` (surface → label), longest first at each
    position, left to right: in 李明月说, 李明月 is found and 李明 is not."""
    by_first: dict[str, list[str]] = {}
    for surface in sorted(surfaces, key=len, reverse=True):
        if surface:
            by_first.setdefault(surface[0], []).append(surface)
    found: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        options = by_first.get(text[i])
        if options:
            for surface in options:
                if text.startswith(surface, i):
                    found.append((i, i + len(surface), surfaces[surface]))
                    i += len(surface)
                    break
            else:
                i += 1
        else:
            i += 1
    return found
