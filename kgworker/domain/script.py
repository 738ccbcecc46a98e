"""Traditional → simplified Chinese that runs OpenCC only where it would change something.

Why: OpenCC's pure-Python converter costs about a millisecond per chapter, and most of what
a node converts (whole chapter texts for the answer's validation, every name) is simplified
already. Its ``t2s`` chain is two tables, phrases then characters
(``opencc/config/t2s.json``); a text can only change where a table key whose value differs
from it occurs, so a text without any character of such a key comes out unchanged. Those
*trigger* characters are read once from OpenCC's own dictionary files (located without
importing OpenCC); the converter itself is built on the first text that needs it. A text
that does is converted piece by piece between punctuation marks and spacing (all of them
separators at which OpenCC cuts the text itself), and only the pieces with a trigger.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path

#: OpenCC's ``t2s`` conversion chain: one group, phrases first (``config/t2s.json``).
T2S_DICTIONARIES = ("TSPhrases.txt", "TSCharacters.txt")
#: Pieces converted on their own: runs between separators OpenCC splits at (a subset).
_PIECE = re.compile(r"[^\s，。、；：？！…“”‘’「」『』《》（）]+")


def dictionary_dir() -> Path:
    """OpenCC's dictionary directory, found without running the package."""
    spec = importlib.util.find_spec("opencc")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("opencc is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "dictionary"


def _entries(name: str) -> list[tuple[str, str]]:
    """``(key, value)`` as OpenCC reads them: tab-separated, the first of several values."""
    out = []
    for line in (dictionary_dir() / name).read_text(encoding="utf-8").splitlines():
        key, value = line.strip().split("\t")
        out.append((key, value.split(" ")[0]))
    return out


@cache
def triggers() -> frozenset[str]:
    """Characters of which every changing ``t2s`` entry has one in its key.

    Each changing character entry is its own trigger. A changing phrase made only of
    characters that do not change alone (``沈默`` → ``沉默``, ``反覆`` → ``反复``) adds
    one of its characters, chosen greedily (the one most such phrases share, else one of the
    character table's keys: ``衹`` of ``衹得``, not ``得``), so simplified text rarely meets
    the set."""
    phrases, characters = (_entries(name) for name in T2S_DICTIONARIES)
    found = {key for key, value in characters if key != value}
    traditional = {key for key, _ in characters}  # keys that map to themselves too
    open_phrases = [key for key, value in phrases if key != value and found.isdisjoint(key)]
    while open_phrases:
        counts = Counter(ch for key in open_phrases for ch in set(key))
        best = min(counts, key=lambda ch: (-counts[ch], ch not in traditional, ch))
        found.add(best)
        open_phrases = [key for key in open_phrases if best not in key]
    return frozenset(found)


@cache
def _converter() -> Callable[[str], str]:
    from opencc import OpenCC

    converter = OpenCC("t2s")
    return lambda text: str(converter.convert(text))


def needs_conversion(text: str) -> bool:
    """Whether ``t2s`` could change ``text`` (False means it would return it unchanged)."""
    return not triggers().isdisjoint(text)


def t2s(text: str) -> str:
    """``OpenCC("t2s").convert(text)``, without OpenCC where it would change nothing."""
    found = triggers()
    if found.isdisjoint(text):
        return text
    convert = _converter()
    return _PIECE.sub(lambda m: m[0] if found.isdisjoint(m[0]) else convert(m[0]), text)
