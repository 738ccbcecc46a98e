"""The rules extractor: no model, finds the gold novel's cast, honours the config."""

from __future__ import annotations

from kgworker.domain.extraction import ChapterInput, ExtractionOptions
from kgworker.domain.resolution import AliasTable, resolve
from kgworker.eval.gold import load_novel
from kgworker.rules.extractor import RulesExtractor

TEXT = "张无忌说：“赵敏，我们去光明顶。”赵敏笑了。张无忌又说：“赵敏，明教的人在等。”"


def chapter(text: str) -> ChapterInput:
    return ChapterInput(
        novel_id=1, chapter_id=1, chapter_number=1, title="", content=text, task_id=1
    )


async def test_finds_the_main_characters_of_the_gold_novel() -> None:
    novel = load_novel()
    extractor, table = RulesExtractor(), AliasTable()
    found: set[str] = set()
    for ch in novel.chapters:
        raw = await extractor.extract(chapter(ch.text), ExtractionOptions())
        assert raw.extracted_by == "rule"
        found |= {c.name for c in resolve(raw, table).characters}
    assert set(novel.main_characters) <= found
    assert {"沈青山", "李明", "李明月", "赵铁生"} <= found


async def test_places_organizations_and_protagonist() -> None:
    novel = load_novel()
    out = await RulesExtractor().extract(chapter(novel.chapters[3].text), ExtractionOptions())
    assert {"望江楼", "归燕客栈"} <= {p.name for p in out.locations}
    assert {"水上巡警队", "铁锚帮"} <= {o.name for o in out.organizations}
    assert "沈青山" not in {p.name for p in out.locations}  # a person ending in 山 is no mountain
    top = max(out.characters, key=lambda c: c.protagonist_score)
    assert top.name == "沈青山"


async def test_cooccurrence_relations_have_count_based_strength() -> None:
    out = await RulesExtractor().extract(chapter(TEXT), ExtractionOptions())
    assert {c.name for c in out.characters} == {"张无忌", "赵敏"}
    (knows,) = out.character_relationships
    assert (knows.source, knows.target, knows.relation) == ("张无忌", "赵敏", "KNOWS")
    assert knows.strength == 0.4  # two sentences together: 2 / 5
    none = await RulesExtractor().extract(
        chapter(TEXT), ExtractionOptions(enable_relation_extraction=False)
    )
    assert none.character_relationships == []


async def test_config_patterns_and_filter_words() -> None:
    options = ExtractionOptions(
        rule_config={
            "character_patterns": [r"(小龙女)"],
            "location_patterns": [r"古墓"],
            "filter_words": ["赵敏"],
        }
    )
    out = await RulesExtractor().extract(chapter(TEXT + "小龙女住在古墓。"), options)
    names = {c.name for c in out.characters}
    assert "小龙女" in names and "赵敏" not in names
    assert "古墓" in {p.name for p in out.locations}


async def test_entity_types_and_toggles_are_honoured() -> None:
    only_people = ExtractionOptions(entity_types=("人物",))
    out = await RulesExtractor().extract(chapter(TEXT), only_people)
    assert out.characters and not out.locations and not out.organizations
    off = await RulesExtractor().extract(
        chapter(TEXT), ExtractionOptions(enable_entity_extraction=False)
    )
    assert off.entity_count == 0
