"""Forms of address and whom they name: 沈先生, 沈三, 老陈, 阿明, 宝二爷 → one full name.

Chinese fiction names a person far more often by a form of address than by the full name.
A form is read off the text around the book's known names: surname + honorific, role or
sibling rank (沈先生, 孙掌柜, 沈三, 沈三哥, 沈家老三), 老/小 + surname or full name (老陈,
小陈默), the given name alone or with an honorific (青山, 明月姑娘), one character of it with
阿/爷/儿 (阿明, 铁爷, 蓉儿, 宝二爷), and a bare rank + 爷 (三爷) once the chapter said whose
rank it is. A form names a person when exactly one fits: among the chapter's full names
first, else among the book's (the roster). Several fitting = ambiguous: the form stays
apart (it is not attached and not emitted). One surname with one full name but two
different roles in one chapter (陈掌柜 and 陈巡警 beside 陈默) is two people who share the
name: each role form keeps its own person, titled with the role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kgworker.domain.names import SURNAMES
from kgworker.rules.lexicon import (
    COMPOUND_SURNAMES,
    COUNTERS,
    FEMALE_FORMS,
    HONORIFICS,
    MALE_FORMS,
    RANKS,
    ROLE_GROUPS,
    ROLES,
)
from kgworker.rules.text import Tokens, dictionary_tag

_FAMILY_RANK = re.compile(r"家的?老([二三四五六七八九十])")
#: Priority among forms of equal length: a full name beats a surname form, and so on.
_PRIORITY = {"name": 5, "full": 4, "rank": 3, "surname": 3, "given": 2, "given_char": 1,
             "pure_rank": 0}


@dataclass
class Person:
    name: str
    surname: str
    given: str
    in_chapter: bool
    #: the qualifier of a roster homonym (陈默（巡警） → 巡警)
    role: str = ""


@dataclass(frozen=True)
class Form:
    start: int
    end: int
    kind: str  #: name, full, surname, rank, given, given_char, pure_rank
    key: str
    role: str = ""
    rank: str = ""
    where: str = ""  #: given_char: "first" or "last" character of the given name


@dataclass
class Someone:
    """One person of the chapter as the extractor emits it."""

    name: str
    title: str = ""
    aliases: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    #: the name a relation end uses (a split homonym's own role form resolves to it)
    ref: str = ""

    @property
    def gender(self) -> str:
        """"f" or "m" when a form of address says so (明月姑娘, 沈三哥), else ""."""
        forms = [a for a in self.aliases if a.startswith(self.name[:1])] or self.aliases
        female = any(a.endswith(FEMALE_FORMS) for a in forms)
        male = any(a.endswith(MALE_FORMS) for a in forms) or self.title in MALE_FORMS
        return "f" if female and not male else "m" if male and not female else ""


def _dictionary_word(word: str) -> bool:
    """A dictionary word that is not a name (王爷, 师兄, 小时): never a form of address."""
    tag = dictionary_tag(word)
    return tag is not None and not tag.startswith("nr")


def _suffix(text: str, at: int) -> str:
    for size in (3, 2, 1):
        word = text[at : at + size]
        if len(word) == size and (word in HONORIFICS or word in ROLES):
            return word
    return ""


def _surname_at(text: str, at: int) -> str:
    if text[at : at + 2] in COMPOUND_SURNAMES:
        return text[at : at + 2]
    return text[at] if at < len(text) and text[at] in SURNAMES else ""


class Index:
    """The people a form may name, indexed by what forms are built from."""

    def __init__(self, people: list[Person]) -> None:
        self.people = people
        self.names: dict[str, list[str]] = {}
        self.givens: dict[str, list[str]] = {}
        for name in sorted({p.name for p in people}, key=len, reverse=True):
            self.names.setdefault(name[0], []).append(name)
        for given in sorted({p.given for p in people if len(p.given) >= 2}, key=len, reverse=True):
            self.givens.setdefault(given[0], []).append(given)
        self.first_chars = {p.given[0] for p in people if p.given and p.surname}
        self.last_chars = {p.given[-1] for p in people if p.given and p.surname}
        #: characters a form can start with: the scan skips every other one
        self.starters = frozenset(
            set(self.names) | set(self.givens) | self.first_chars | self.last_chars
            | RANKS | SURNAMES | {s[0] for s in COMPOUND_SURNAMES} | set("老小阿")
        )

    def name_at(self, text: str, at: int) -> str:
        for name in self.names.get(text[at : at + 1], ()):
            if text.startswith(name, at):
                return name
        return ""

    def given_at(self, text: str, at: int) -> str:
        for given in self.givens.get(text[at : at + 1], ()):
            if text.startswith(given, at):
                return given
        return ""


def _options(text: str, i: int, index: Index, bounds: set[int]) -> list[Form]:
    """Every form that could start at ``i`` (the caller keeps the longest)."""
    out: list[Form] = []
    c = text[i]
    name = index.name_at(text, i)
    if name:
        end = i + len(name)
        suffix = _suffix(text, end)
        if suffix and end + len(suffix) in bounds:
            out.append(Form(i, end + len(suffix), "full", name))
        out.append(Form(i, end, "name", name))
    if i not in bounds:
        return out
    if c in "老小阿":
        full = index.name_at(text, i + 1)
        if full:
            out.append(Form(i, i + 1 + len(full), "full", full))
        surname = _surname_at(text, i + 1) if c != "阿" else ""
        end = i + 1 + len(surname)
        if surname and end in bounds and not _dictionary_word(text[i:end]):
            out.append(Form(i, end, "surname", surname))
        last = text[i + 1 : i + 2]
        if c != "老" and last in index.last_chars and i + 2 in bounds and not _dictionary_word(
            text[i : i + 2]
        ):
            out.append(Form(i, i + 2, "given_char", last, where="last"))
    surname = _surname_at(text, i)
    if surname:
        j = i + len(surname)
        family = _FAMILY_RANK.match(text, j)
        if family and family.end() in bounds:
            out.append(Form(i, family.end(), "rank", surname, rank=family.group(1)))
        rank, after = text[j : j + 1], text[j + 1 : j + 2]
        if rank and rank in RANKS and after not in COUNTERS and after not in RANKS:
            suffix = _suffix(text, j + 1)
            if j + 1 + len(suffix) in bounds and not after.isdigit():
                out.append(Form(i, j + 1 + len(suffix), "rank", surname, rank=rank))
        suffix = _suffix(text, j)
        end = j + len(suffix)
        if suffix and end in bounds and not _dictionary_word(text[i:end]):
            role = ROLE_GROUPS.get(suffix, suffix) if suffix in ROLES else ""
            out.append(Form(i, end, "surname", surname, role=role))
    given = index.given_at(text, i)
    if given and given != name:
        end = i + len(given)
        suffix = _suffix(text, end)
        if suffix and end + len(suffix) in bounds:
            out.append(Form(i, end + len(suffix), "given", given))
        if end in bounds:
            out.append(Form(i, end, "given", given))
    nxt, third = text[i + 1 : i + 2], text[i + 2 : i + 3]
    if c in index.first_chars:
        if nxt == "爷" and i + 2 in bounds and not _dictionary_word(text[i : i + 2]):
            out.append(Form(i, i + 2, "given_char", c, where="first"))
        if nxt and nxt in RANKS and third in ("爷", "哥", "姐") and i + 3 in bounds:
            out.append(Form(i, i + 3, "given_char", c, where="first"))
    pet = c in index.last_chars and nxt in ("儿", "姐", "妹", "哥")  # 蓉儿, 凤姐
    if pet and i + 2 in bounds and not _dictionary_word(text[i : i + 2]):
        out.append(Form(i, i + 2, "given_char", c, where="last"))
    if c in RANKS and c != "大" and nxt in ("爷", "哥", "姐") and i + 2 in bounds:
        out.append(Form(i, i + 2, "pure_rank", c))
    return out


def read_forms(text: str, tokens: Tokens, index: Index) -> list[Form]:
    """The chapter's names and forms of address, left to right, longest first."""
    bounds = set(tokens.starts)
    bounds.add(len(text))
    forms: list[Form] = []
    i, n = 0, len(text)
    starters = index.starters
    while i < n:
        if text[i] not in starters:
            i += 1
            continue
        options = _options(text, i, index, bounds)
        if options:
            best = max(options, key=lambda f: (f.end, _PRIORITY[f.kind]))
            forms.append(best)
            i = best.end
        else:
            i += 1
    return forms


def _fits(form: Form, person: Person, ranks: dict[str, str]) -> bool:
    kind, key = form.kind, form.key
    if kind in ("name", "full"):
        return person.name == key
    if kind in ("surname", "rank"):
        return person.surname == key
    if kind == "given":
        return person.given == key
    if kind == "given_char":
        if not person.surname or not person.given:
            return False
        return person.given[0 if form.where == "first" else -1] == key
    return ranks.get(person.name) == key  # pure_rank


def _owner(form: Form, index: Index, ranks: dict[str, str]) -> tuple[Person | None, bool]:
    """(the one person ``form`` names, ambiguous?): chapter people first, then the roster."""
    for local in (True, False):
        fitting = {
            p.name: p for p in index.people if p.in_chapter == local and _fits(form, p, ranks)
        }
        if len(fitting) == 1:
            return next(iter(fitting.values())), False
        if len(fitting) > 1:
            return None, True
    return None, False


@dataclass
class Reading:
    """Who each form names: ``owned`` (form, person) pairs; the unowned and ambiguous."""

    owned: list[tuple[Form, Person]]
    unowned: list[Form]
    ambiguous: list[Form]


def attribute(forms: list[Form], index: Index) -> Reading:
    ranks: dict[str, str] = {}
    reading = Reading([], [], [])
    pending: list[Form] = []
    for form in forms:
        if form.kind == "pure_rank":
            pending.append(form)
            continue
        person, ambiguous = _owner(form, index, ranks)
        if person is not None:
            reading.owned.append((form, person))
            if form.kind == "rank":
                ranks.setdefault(person.name, form.rank)
        elif ambiguous:
            reading.ambiguous.append(form)
        else:
            reading.unowned.append(form)
    for form in pending:  # 三爷 once the chapter said whose rank 三 is
        person, ambiguous = _owner(form, index, ranks)
        if person is not None:
            reading.owned.append((form, person))
        else:
            (reading.ambiguous if ambiguous else reading.unowned).append(form)
    reading.owned.sort(key=lambda pair: pair[0].start)
    return reading


def cast(text: str, reading: Reading) -> list[Someone]:
    """The chapter's people with their aliases, titles and occurrences (see module doc)."""
    by_person: dict[str, list[Form]] = {}
    people: dict[str, Person] = {}
    for form, person in reading.owned:
        by_person.setdefault(person.name, []).append(form)
        people[person.name] = person
    out: list[Someone] = []
    for name, forms in by_person.items():
        person = people[name]
        roles = list(dict.fromkeys(f.role for f in forms if f.kind == "surname" and f.role))
        if len(roles) >= 2 and person.in_chapter:
            out += _split(text, name, forms, roles)
            continue
        one = Someone(name, title=roles[0] if roles else person.role, ref=name)
        for form in forms:
            _take(one, text, form)
        out.append(one)
    return out


def _take(someone: Someone, text: str, form: Form) -> None:
    surface = text[form.start : form.end]
    someone.spans.append((form.start, form.end))
    if surface != someone.name and surface not in someone.aliases:
        someone.aliases.append(surface)


def _split(text: str, name: str, forms: list[Form], roles: list[str]) -> list[Someone]:
    """Two people sharing ``name``: each role form keeps its own; the rest stays apart."""
    items = {role: Someone(name, title=role) for role in roles}
    for form in forms:
        if form.kind == "surname" and form.role in items:
            _take(items[form.role], text, form)
    for item in items.values():
        item.ref = item.aliases[0] if item.aliases else name
    return list(items.values())
