"""Person names: candidates from surnames and tags, kept only on a reader's evidence.

Candidates: a surname followed by one or two name characters (沈 + 青山, 赵 + 铁 + 生 — a
third character joins when it follows the first two in most of their occurrences), and
jieba's dictionary words tagged as person names (李明月, 宝玉). Evidence, per occurrence:
a speech or action verb after the name (道, 笑道, 说, 点头; adverbs such as 也/又/慢慢 may sit
between), a naming cue before it (叫陈默, 名叫…), a vocative (“李明，…), an honorific after
it (陆远山先生); a locative after it (沙滩上) counts against. A candidate is a person with
strong evidence and, for dictionary words and names without a surname, two mentions or
more: 沙滩, 石阶 and 薄冰 are dictionary words no one ever *says* anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kgworker.domain.names import SURNAMES
from kgworker.rules.lexicon import (
    COMPOUND_SURNAMES,
    FAMILIAR,
    HONORIFICS,
    HUMAN_ACTIONS,
    LOCATIVES,
    MANNER,
    NAMING_CUES,
    NOT_NAME_CHARS,
    PERSONAL_NOUNS,
    RANKS,
    ROLES,
    SPEECH_CHARS,
    SPEECH_VERBS,
    STOP_NAMES,
)
from kgworker.rules.text import Tokens, dictionary_freq, is_cjk

#: Tags a two-character given name may carry in jieba's dictionary (青山/ns, 远山/ns).
_GIVEN_TAGS = frozenset(
    ("n", "nr", "nrfg", "nrt", "ns", "nz", "ng", "nt", "j", "z", "a", "an", "b", "vn", "l", "i")
)
#: Tags that end a name: a third character with one of these is the next word (李明站…).
_NOT_THIRD = frozenset(
    ("v", "vd", "vg", "d", "p", "c", "u", "uj", "ul", "uz", "ug", "uv", "ud", "r", "y", "f", "q",
     "m", "e", "o", "x", "t", "s", "zg")
)
#: A surname character that is mostly a function word in jieba's dictionary (别, 和, 向).
_FUNCTION_SURNAMES = frozenset(("r", "d", "p", "c", "f", "v"))
_OPEN_QUOTES = "“「『\"'‘"
_PAUSE = "，,！!？?"
#: Dictionary words seen this often in jieba's corpus are words first, names second.
COMMON_FREQ = 20
_SUFFIXES = tuple(sorted(HONORIFICS | ROLES, key=len, reverse=True))


def split_surname(name: str) -> tuple[str, str]:
    """(surname, given) of a full name; ("", name) when it does not start with a surname."""
    if name[:2] in COMPOUND_SURNAMES and len(name) >= 3:
        return name[:2], name[2:]
    if name[:1] in SURNAMES and len(name) >= 2:
        return name[:1], name[1:]
    return "", name


@dataclass
class Candidate:
    name: str
    surname: str
    given: str
    #: a dictionary word (石阶, 宝玉): needs repeated strong evidence
    common: bool = False


@dataclass
class Evidence:
    mentions: int = 0
    strong: int = 0
    weak: int = 0
    against: int = 0
    starts: list[int] = field(default_factory=list)

    def add(self, other: tuple[int, int, int], start: int) -> None:
        self.mentions += 1
        self.strong += other[0]
        self.weak += other[1]
        self.against += other[2]
        self.starts.append(start)


def _given_ok(word: str) -> bool:
    return all(is_cjk(c) and c not in NOT_NAME_CHARS for c in word)


def _is_surname(word: str) -> bool:
    return word in COMPOUND_SURNAMES or (len(word) == 1 and word in SURNAMES)


def _from_dictionary(word: str, tag: str) -> Candidate | None:
    """A dictionary word jieba tags as a name (李明月, 宝玉), or a name-like word starting
    with a surname (岳灵珊/ns); jieba's "贾母笑" entries lose their verb."""
    if len(word) >= 3 and word[-1] in SPEECH_CHARS and tag.startswith(("nr", "i")):
        word = word[:-1]
    elif not tag.startswith("nr") and not (
        tag in ("ns", "nz") and len(word) == 3 and _is_surname(word[:1])
    ):
        return None
    if (
        not all(map(is_cjk, word))
        or word[0] in FAMILIAR
        or word in STOP_NAMES
        or word.endswith(_SUFFIXES)
        or word.endswith("家")
    ):
        return None  # a form of address (阿明, 陆先生): see kgworker.rules.address
    surname, given = split_surname(word)
    return Candidate(word, surname, given, dictionary_freq(word) >= COMMON_FREQ or tag[0] != "n")


def discover(tokens: Tokens) -> dict[str, Candidate]:
    """Candidate full names of a chapter (see module doc)."""
    words, flags = tokens.words, tokens.flags
    found: dict[str, Candidate] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    triples: Counter[tuple[str, str, str]] = Counter()
    weak_pairs: set[tuple[str, str]] = set()
    verb_thirds: set[tuple[str, str, str]] = set()
    n = len(words)
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < n else ""
        if _is_surname(word) and nxt:
            tag = flags[i + 1]
            weak = flags[i] in _FUNCTION_SURNAMES  # 别, 和, 向: a word first
            if (
                len(nxt) == 2
                and tag in _GIVEN_TAGS
                and _given_ok(nxt)
                and nxt not in HONORIFICS
                and nxt not in ROLES
                and not (nxt[0] in RANKS and nxt[1:] in HONORIFICS)  # 三哥, 二爷
            ):
                found.setdefault(word + nxt, Candidate(word + nxt, word, nxt, weak))
            elif len(nxt) == 1 and _given_ok(nxt) and nxt not in HONORIFICS:
                pairs[(word, nxt)] += 1
                third = words[i + 2] if i + 2 < n else ""
                if (
                    len(third) == 1
                    and _given_ok(third)
                    and third not in SPEECH_CHARS
                    and third not in RANKS
                    and third not in HONORIFICS
                    and flags[i + 2] not in _NOT_THIRD - {"v"}
                ):
                    triples[(word, nxt, third)] += 1
                    if flags[i + 2] == "v":
                        verb_thirds.add((word, nxt, third))
                if weak:
                    weak_pairs.add((word, nxt))
        elif len(word) >= 2:
            candidate = _from_dictionary(word, flags[i])
            if candidate is not None:
                found.setdefault(candidate.name, candidate)
        elif (
            flags[i] == "nr"
            and len(nxt) == 1
            and flags[i + 1] == "nr"
            and _given_ok(word + nxt)
            and not _is_surname(word)
        ):
            found.setdefault(word + nxt, Candidate(word + nxt, "", word + nxt, True))  # 黛/玉
    longer: dict[tuple[str, str], tuple[str, int]] = {}
    for key, count in triples.items():
        best = longer.get(key[:2])
        if (best is None or count > best[1]) and (count >= 2 or key not in verb_thirds):
            longer[key[:2]] = (key[2], count)
    for (surname, first), count in pairs.items():
        third, n3 = longer.get((surname, first), ("", 0))
        weak = (surname, first) in weak_pairs
        if third and n3 >= 0.6 * count:
            name = surname + first + third
            found.setdefault(name, Candidate(name, surname, first + third, weak))
        elif first not in RANKS:  # 沈三 is a form of address; 钱二虎 a name
            name = surname + first
            common = weak or dictionary_freq(name) > 0
            found.setdefault(name, Candidate(name, surname, first, common))
    return {k: v for k, v in found.items() if k not in STOP_NAMES}


def occurrence_evidence(text: str, tokens: Tokens, start: int, end: int) -> tuple[int, int, int]:
    """(strong, weak, against) for one occurrence of a name at ``text[start:end]``."""
    strong = weak = against = 0
    before = text[max(0, start - 3) : start]
    if any(before.endswith(cue) for cue in NAMING_CUES):
        strong += 1
    prev, nxt, nxt2 = text[start - 1 : start], text[end : end + 1], text[end + 1 : end + 2]
    if nxt and nxt in SPEECH_CHARS:
        strong += 1  # 贾母笑道, 令狐冲道: however jieba cut it
    if (prev and prev in _OPEN_QUOTES and nxt and nxt in _PAUSE) or (
        nxt and nxt in "，," and nxt2 in ("你", "您")
    ):
        strong += 1  # “李明，…  /  李明，你…
    if nxt in (":", "：") and nxt2 and nxt2 in _OPEN_QUOTES:
        strong += 1
    j = tokens.after(end)
    if j is None:
        return strong, weak, against
    words, flags = tokens.words, tokens.flags
    if words[j] in HONORIFICS or words[j] in ROLES:
        strong += 1
    if words[j] in LOCATIVES:
        against += 1
    if words[j] == "的" and j + 1 < len(words) and words[j + 1] in PERSONAL_NOUNS:
        weak += 1
    skipped = 0
    while j < len(words) and words[j] in MANNER and skipped < 2:
        j += 1
        skipped += 1
    if j < len(words) and not (skipped == 0 and nxt in SPEECH_CHARS):
        word = words[j]
        if word in SPEECH_VERBS or word in HUMAN_ACTIONS or (
            flags[j].startswith("v") and len(word) <= 3 and word[-1] in ("道", "笑")
        ):
            strong += 1
        elif flags[j].startswith("v"):
            weak += 1
    return strong, weak, against


def is_person(candidate: Candidate, evidence: Evidence) -> bool:
    """The decision of the module doc: strong evidence, repeated for dictionary words and
    for names without a surname, and more for than against."""
    if evidence.mentions == 0 or evidence.strong == 0:
        return False
    if 2 * evidence.strong + evidence.weak < 2 + 2 * evidence.against:
        return False
    if candidate.common or not candidate.surname:
        return evidence.mentions >= 2
    return True
