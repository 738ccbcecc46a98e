"""Relations between the chapter's people: who meets whom, and what the text says they are.

Two people are related when they meet in a sentence, across a dialogue exchange (two
adjacent paragraphs of quoted speech), or in a line that calls one of them and is said by
the other (“回来了，陈叔。” after a paragraph about the speaker), at least ``min_count``
times (3: two meetings in a chapter are too often two people in one crowd); the
relation's ``strength`` grows with that count (count / 5, at most 1). Its type is KNOWS
unless a sentence naming both says more, with a cue a reader would not miss:

* master and servant words between them: A的徒弟B (B FOLLOWS A), A的师父B (B LEADS A),
  A投靠B, A跟着B, A站在B身后 (A FOLLOWS B), A吩咐B (A LEADS B);
* love and hate verbs between them: A喜欢B (A LOVES B), A恨B (A HATES B); spouses love;
* kin words between them: family KNOWS (the contract has no family type);
* a hostile act on B in B's clause: 把B撞翻, 给B戴上手铐, 朝B扑了过去 (ENEMY);
* enmity or friendship words in the narration (not in quoted speech, where 你/他 are
  the people meant): 仇人, 死敌 (ENEMY), 朋友, 发小 (FRIEND); when both occur the later one
  is the state now (从兄弟成了仇人: ENEMY).

A sentence naming one person and 他/她 with such a cue (李明是他最好的朋友) relates that
person to the one named last before it. A typed relation needs one cue; KNOWS needs the
count.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from kgworker.domain.extraction import CharacterRelation
from kgworker.rules.address import Someone
from kgworker.rules.lexicon import (
    BECOME,
    ENEMY_NOUNS,
    FOLLOW_VERBS,
    FOLLOWER_NOUNS,
    FRIEND_CUES,
    HATE_CUES,
    HOSTILE_ACTS,
    HOSTILE_PREPOSITIONS,
    KIN_NOUNS,
    LEAD_VERBS,
    LEADER_NOUNS,
    LOVE_CUES,
    SPOUSE_NOUNS,
)
from kgworker.rules.text import Units

#: A cue between two names counts only this close (A投靠了B, not a page apart).
_NEAR = 8
_CLAUSE_BREAKS = "，,；;：:。！？!?"
_SYMMETRIC = frozenset({"FRIEND", "ENEMY", "KNOWS"})
_PRONOUNS = ("他", "她")
Span = tuple[int, int]


def _is(mid: str, after: str, noun: str) -> bool:
    """A的NOUN B, or A是B的NOUN."""
    return mid.endswith(f"的{noun}") or (mid in ("是", "乃是") and after.startswith(f"的{noun}"))


def _between(mid: str, after: str) -> tuple[str, bool] | None:
    """(type, second-is-source?) from the words between two names and right after the
    second one."""
    if len(mid) > _NEAR or any(b in mid for b in _CLAUSE_BREAKS):
        return None
    is_of = mid in ("是", "乃是")  # 李明是赵铁生的徒弟: the first is the servant
    for noun in FOLLOWER_NOUNS:
        if _is(mid, after, noun):
            return "FOLLOWS", not is_of
    for noun in LEADER_NOUNS:
        if _is(mid, after, noun):
            return "LEADS", not is_of
    if any(_is(mid, after, noun) for noun in SPOUSE_NOUNS):
        return "LOVES", False
    if any(_is(mid, after, noun) for noun in KIN_NOUNS):
        return "KNOWS", False
    if mid.endswith("站在") and after.lstrip("的").startswith("身后"):
        return "FOLLOWS", False
    if mid in ("跟着", "一直跟着") or any(v in mid for v in FOLLOW_VERBS):
        return "FOLLOWS", False
    if any(v in mid for v in LEAD_VERBS):
        return "LEADS", False
    if any(v in mid for v in LOVE_CUES):
        return "LOVES", False
    if "恨不得" not in mid and any(v in mid for v in HATE_CUES):
        return "HATES", False
    return None


def _hostile(text: str, second: Span, hi: int) -> bool:
    """把B撞翻 / 给B戴上了手铐 / 朝B扑了过去: a hostile act on B in B's clause."""
    start, end = second
    if text[max(0, start - 1) : start] not in HOSTILE_PREPOSITIONS:
        return False
    clause = text[end : min(hi, end + 10)]
    for stop in _CLAUSE_BREAKS:
        clause = clause.split(stop)[0]
    return any(act in clause for act in HOSTILE_ACTS)


def _stance(text: str, lo: int, hi: int, quoted: list[bool]) -> str | None:
    """ENEMY or FRIEND from the narration's last cue in ``text[lo:hi]`` (after 成了… if
    there is one)."""
    sentence = text[lo:hi]
    best: tuple[int, str] | None = None
    for cues, kind in ((ENEMY_NOUNS, "ENEMY"), (FRIEND_CUES, "FRIEND")):
        for cue in cues:
            at = sentence.rfind(cue)
            if at < 0 or quoted[lo + at]:
                continue
            became = any(sentence[max(0, at - 3) : at].endswith(b) for b in BECOME)
            rank = at + (10_000 if became else 0)
            if best is None or rank > best[0]:
                best = (rank, kind)
    return best[1] if best else None


def _quoted(text: str) -> list[bool]:
    inside, out = False, []
    for char in text:
        if char in "“「『":
            inside = True
        out.append(inside)
        if char in "”」』":
            inside = False
    return out


class _Spans:
    """Which unit an offset falls in."""

    def __init__(self, units: Sequence[Span]) -> None:
        self.units = list(units)
        self.starts = [u[0] for u in units]

    def index(self, offset: int) -> int | None:
        i = bisect.bisect_right(self.starts, offset) - 1
        return i if i >= 0 and offset < self.units[i][1] else None


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class _Typed:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, kind: str, source: str, target: str) -> None:
        if source == target:
            return
        if kind in _SYMMETRIC:
            source, target = _pair(source, target)
        self.counts[(kind, source, target)] += 1


def relations(
    text: str, people: Sequence[Someone], units: Units, *, min_count: int = 3
) -> list[CharacterRelation]:
    sentences = _Spans(units.sentences)
    quoted = _quoted(text)
    in_sentence: dict[int, dict[str, list[Span]]] = {}
    mentions: list[tuple[int, int, str]] = []
    genders = {p.ref: p.gender for p in people}
    for person in people:
        for start, end in person.spans:
            mentions.append((start, end, person.ref))
            i = sentences.index(start)
            if i is not None:
                in_sentence.setdefault(i, {}).setdefault(person.ref, []).append((start, end))
    mentions.sort()
    counts: Counter[tuple[str, str]] = Counter()
    typed = _Typed()
    for i, present in in_sentence.items():
        lo, hi = units.sentences[i]
        for a, b in combinations(sorted(present, key=lambda r: present[r][0][0]), 2):
            counts[_pair(a, b)] += 1
            for kind, s, t in _sentence_types(text, hi, present[a], present[b], quoted):
                typed.add(kind, a if s == "A" else b, a if t == "A" else b)
        if len(present) == 1:
            _pronoun_types(text, lo, hi, present, mentions, genders, quoted, typed)
    for lo, hi in units.exchanges:
        mid = text.rfind("\n", lo, hi)
        first = {p.ref for p in people if any(lo <= s < mid for s, _ in p.spans)}
        second = {p.ref for p in people if any(mid < s < hi for s, _ in p.spans)}
        for a in first:
            for b in second - first:
                counts[_pair(a, b)] += 1
    for addressee, speaker in _addressed(text, mentions, quoted):
        counts[_pair(addressee, speaker)] += 1
    out: list[CharacterRelation] = []
    typed_pairs = {_pair(s, t) for _, s, t in typed.counts}
    for (kind, source, target), n in typed.counts.most_common():
        count = max(n, counts[_pair(source, target)])
        out.append(_relation(source, target, kind, count, "句中线索"))
    for (a, b), n in counts.most_common():
        if n >= min_count and (a, b) not in typed_pairs:
            out.append(_relation(a, b, "KNOWS", n, "同句或对话中共同出现"))
    return out


def _sentence_types(
    text: str, hi: int, spans_a: list[Span], spans_b: list[Span], quoted: list[bool]
) -> list[tuple[str, str, str]]:
    """Types one sentence gives a pair: ("KIND", "A"|"B", "A"|"B"), A named first."""
    a_start, a_end = spans_a[0]
    b_start, b_end = spans_b[0]
    if a_end <= b_start:
        between = _between(text[a_end:b_start], text[b_end : b_end + 4])
        if between:
            kind, backwards = between
            return [(kind, "B", "A") if backwards else (kind, "A", "B")]
    if any(_hostile(text, span, hi) for span in spans_b):
        return [("ENEMY", "A", "B")]
    stance = _stance(text, a_start, hi, quoted)
    return [(stance, "A", "B")] if stance else []


def _pronoun_types(
    text: str,
    lo: int,
    hi: int,
    present: dict[str, list[Span]],
    mentions: list[tuple[int, int, str]],
    genders: dict[str, str],
    quoted: list[bool],
    typed: _Typed,
) -> None:
    """李明是他最好的朋友: 他 is the person named last before this sentence (not a woman
    for 他, not a man for 她, when a form of address told)."""
    ((ref, spans),) = present.items()
    start, end = spans[0]
    for offset in range(lo, hi):
        if text[offset] not in _PRONOUNS or quoted[offset]:
            continue
        if text[offset + 1 : offset + 2] == "们" or text[offset - 1 : offset] in ("其", "吉"):
            continue
        unlike = "f" if text[offset] == "他" else "m"
        before = [r for at, _, r in mentions if at < lo and r != ref and genders[r] != unlike]
        if not before:
            return
        other = before[-1]
        if offset >= end:
            between = _between(text[end:offset], text[offset + 1 : offset + 5])
            pair = (ref, other)
        else:
            between = _between(text[offset + 1 : start], text[end : end + 4])
            pair = (other, ref)
        if between:
            kind, backwards = between
            typed.add(kind, *(pair[::-1] if backwards else pair))
        else:
            stance = _stance(text, lo, hi, quoted)
            if stance:
                typed.add(stance, ref, other)
        return


def _addressed(
    text: str, mentions: list[tuple[int, int, str]], quoted: list[bool]
) -> list[tuple[str, str]]:
    """A line of dialogue that names no speaker but calls someone (“回来了，陈叔。”) is
    said by the person the paragraph before named last: (addressee, speaker) pairs."""
    out: list[tuple[str, str]] = []
    paragraphs: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        paragraphs.append((pos, pos + len(line)))
        pos += len(line) + 1
    previous: list[str] = []
    starts = [m[0] for m in mentions]
    for lo, hi in paragraphs:
        here = mentions[bisect.bisect_left(starts, lo) : bisect.bisect_left(starts, hi)]
        outside = [r for s, _, r in here if not quoted[s]]
        if not outside:
            called = {
                r for s, e, r in here
                if text[s - 1 : s] in "“「『，," and text[e : e + 1] in "，,！!？?。”"
            }
            for addressee in called:
                speakers = [r for r in previous if r != addressee]
                if speakers:
                    out.append((addressee, speakers[-1]))
        if hi > lo:
            previous = outside
    return out


def _relation(source: str, target: str, kind: str, count: int, why: str) -> CharacterRelation:
    return CharacterRelation.model_validate(
        {
            "from": source,
            "to": target,
            "relation": kind,
            "description": f"{why}（{count}次）",
            "strength": round(min(1.0, count / 5), 2),
        }
    )
