"""The seeded fault injector: which faults a request gets, and what each one does.

Three classes, as real providers misbehave: *transport* faults replace the answer (429
with Retry-After, 5xx, fatal 4xx, a hang past the client's timeout, a connection reset);
*content* faults change what the model says (aliases, traditional variants, reversed,
hallucinated or dangling relations, off-schema types, duplicates); *format* faults change
how it is written (fences, preambles, think blocks, trailing commas, single quotes,
truncation with ``finish_reason = length``, an empty body). A request draws each fault
independently with its rate from one seeded RNG; a scripted queue overrides the draw for
the next requests, so a test can say exactly "429, then a good answer".

It lives in the package, not with the fake LLM server (``tests/fakellm``, which uses it),
so the fault suites of ``kgworker eval`` run from an installed wheel too.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opencc import OpenCC

TRANSPORT = (
    "http_429",
    "http_500",
    "http_503",
    "http_400",
    "http_401",
    "http_403",
    "content_filter",
    "timeout",
    "reset",
)
CONTENT = (
    "alias",
    "traditional",
    "reversed",
    "hallucinated",
    "missing_end",
    "off_schema",
    "duplicate",
)
FORMAT = ("fence", "preamble", "think", "trailing_comma", "single_quotes", "truncate", "empty")
ALL_FAULTS = TRANSPORT + CONTENT + FORMAT
HALLUCINATED_NAME = "欧阳无影"
MISSING_NAME = "无名氏"

_s2t = OpenCC("s2t")


@dataclass
class FaultPlan:
    """Fault rates per request, drawn from ``random.Random(seed)``, plus a scripted queue."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: float | None = 1.0
    hang_seconds: float = 30.0
    _script: deque[tuple[str, ...]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        self._rng = random.Random(self.seed)

    def script(self, *requests: str | Iterable[str] | None) -> None:
        """Faults for the next requests, one argument per request (None = clean)."""
        for item in requests:
            faults = () if item is None else (item,) if isinstance(item, str) else tuple(item)
            self._script.append(faults)

    def draw(self) -> tuple[str, ...]:
        if self._script:
            return self._script.popleft()
        chosen = [f for f in ALL_FAULTS if self._rng.random() < self.rates.get(f, 0.0)]
        transport = [f for f in chosen if f in TRANSPORT][:1]
        return tuple(transport) if transport else tuple(chosen)


def _rename(answer: dict[str, Any], old: str, new: str) -> None:
    for item in answer.get("characters", []):
        if item.get("name") == old:
            item["name"] = new
    for rel in answer.get("character_relationships", []):
        for end in ("from", "to"):
            if rel.get(end) == old:
                rel[end] = new
    for rel in answer.get("event_relationships", []):
        if rel.get("character") == old:
            rel["character"] = new


def apply_content(
    answer: dict[str, Any], faults: Iterable[str], rng: random.Random
) -> dict[str, Any]:
    """A copy of ``answer`` with the content faults applied (ones that do not fit are skipped)."""
    out = copy.deepcopy(answer)
    people = out.get("characters")
    rels = out.get("character_relationships")
    for fault in faults:
        if fault == "alias" and people:
            person = rng.choice(people)
            aliases = [a for a in person.get("aliases", []) if a != person["name"]]
            alias = aliases[0] if aliases else person["name"][1:]
            if len(alias) >= 2:
                _rename(out, person["name"], alias)
        elif fault == "traditional" and people:
            person = rng.choice(people)
            _rename(out, person["name"], _s2t.convert(person["name"]))
        elif fault == "reversed" and rels:
            rel = rng.choice(rels)
            rel["from"], rel["to"] = rel["to"], rel["from"]
        elif fault == "hallucinated" and people is not None:
            people.append({"name": HALLUCINATED_NAME, "description": "从未出现的人物"})
        elif fault == "missing_end" and people and rels is not None:
            rels.append({"from": people[0]["name"], "to": MISSING_NAME, "relation": "KNOWS"})
        elif fault == "off_schema":
            if rels is not None and people and len(people) >= 2:
                a, b = people[0]["name"], people[1]["name"]
                rels.append({"from": a, "to": b, "relation": "MENTOR_OF"})
            out["artifacts"] = [{"name": "玄铁剑", "type": "兵器"}]
        elif fault == "duplicate" and people:
            people.append(copy.deepcopy(rng.choice(people)))
    return out


def render(answer: dict[str, Any], faults: Iterable[str]) -> tuple[str, str]:
    """(text, finish_reason) of ``answer`` written with the format faults."""
    faults = set(faults)
    if "empty" in faults:
        return "", "stop"
    text = json.dumps(answer, ensure_ascii=False, indent=1)
    if "trailing_comma" in faults:
        text = re.sub(r"(?<=[^\[{\s,])(\s*)([}\]])", r",\1\2", text)
    if "single_quotes" in faults:
        text = text.replace('"', "'")
    if "fence" in faults:
        text = f"```json\n{text}\n```"
    if "preamble" in faults:
        text = f"好的，以下是抽取结果：\n{text}\n以上就是全部内容。"
    if "think" in faults:
        text = f"<think>先找人物，再找关系。{{草稿}}</think>\n{text}"
    if "truncate" in faults:
        return text[: max(1, len(text) * 3 // 5)], "length"
    return text, "stop"
