"""Entity resolution: one trap per test, as in the gold novel."""

from __future__ import annotations

from typing import Any

from kgworker.domain.extraction import ChapterExtraction
from kgworker.domain.names import (
    address_surname,
    display_name,
    is_generic,
    nested_conflict,
    strip_honorifics,
)
from kgworker.domain.resolution import AliasTable, resolve, resolve_with_map


def chapter(**lists: Any) -> ChapterExtraction:
    return ChapterExtraction.model_validate(lists)


def person(name: str, *aliases: str, title: str = "", description: str = "") -> dict[str, Any]:
    return {"name": name, "aliases": list(aliases), "title": title, "description": description}


def rel(a: str, b: str, kind: str = "KNOWS", description: str = "") -> dict[str, Any]:
    return {"from": a, "to": b, "relation": kind, "description": description}


def names(result: ChapterExtraction) -> list[str]:
    return [c.name for c in result.characters]


def test_normalisation_width_script_spacing_and_qualifiers() -> None:
    assert display_name("３号货仓") == "3号货仓"
    assert display_name("趙鐵生") == "赵铁生"
    assert display_name(" 沈　青山 ") == "沈青山"
    assert display_name("「李明」") == "李明"
    assert display_name("陈默(巡警)") == "陈默（巡警）"


def test_honorifics_are_stripped_only_when_a_name_remains() -> None:
    assert strip_honorifics("明月姑娘") == "明月"
    assert strip_honorifics("沈三哥") == "沈三"
    assert strip_honorifics("陆远山先生") == "陆远山"
    assert strip_honorifics("老陈默") == "陈默"
    for kept in ("老王", "陈叔", "三爷", "孙掌柜"):
        assert strip_honorifics(kept) == kept
    assert is_generic("先生") and is_generic("老掌柜") and not is_generic("陈叔")
    assert address_surname("老陈") == "陈" and address_surname("陆先生") == "陆"
    assert address_surname("沈青山") is None and address_surname("三爷") is None


def test_variants_merge_into_one_entity_per_type() -> None:
    table = AliasTable()
    resolve(
        chapter(
            characters=[person("赵铁生", "赵老大")],
            organizations=[{"name": "铁锚帮"}],
            locations=[{"name": "3号货仓"}],
        ),
        table,
    )
    out = resolve(
        chapter(
            characters=[person("趙鐵生"), person("赵 老大")],
            organizations=[{"name": "鐵錨幫"}],
            locations=[{"name": "３号货仓"}],
        ),
        table,
    )
    assert names(out) == ["赵铁生"]
    assert [o.name for o in out.organizations] == ["铁锚帮"]
    assert [p.name for p in out.locations] == ["3号货仓"]


def test_honorific_forms_merge_and_are_kept_as_aliases() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("李明月", "明月")]), table)
    out = resolve(chapter(characters=[person("明月姑娘")]), table)
    assert names(out) == ["李明月"]
    assert "明月姑娘" in out.characters[0].aliases
    assert table.canonical("character", "明月姑娘") == "李明月"


def test_first_mention_with_honorific_becomes_the_bare_name() -> None:
    out = resolve(chapter(characters=[person("陆远山先生")]), AliasTable())
    assert names(out) == ["陆远山"]
    assert out.characters[0].aliases == ["陆远山先生"]


def test_alias_chain_across_chapters() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("沈青山", "沈三")]), table)  # chapter 1
    resolve(chapter(characters=[person("沈三", "三爷")]), table)  # chapter 5: 沈三 is 三爷
    out = resolve(
        chapter(
            characters=[person("三爷"), person("李明")],
            character_relationships=[rel("三爷", "李明", "ENEMY")],
        ),
        table,
    )
    assert names(out) == ["沈青山", "李明"]
    assert [(r.source, r.target) for r in out.character_relationships] == [("沈青山", "李明")]


def test_never_merge_across_types() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("白鹭")]), table)
    out = resolve(chapter(locations=[{"name": "白鹭"}], characters=[person("白鹭")]), table)
    assert [p.name for p in out.locations] == ["白鹭"] and names(out) == ["白鹭"]
    assert table.entities("location") == ["白鹭"] and table.entities("character") == ["白鹭"]


def test_nested_names_stay_apart_even_when_an_alias_claims_otherwise() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("李明", "阿明")]), table)
    out = resolve(chapter(characters=[person("李明月", "李明")]), table)  # a wrong alias
    assert names(out) == ["李明月"]
    assert table.canonical("character", "李明") == "李明"
    assert nested_conflict("李明", "李明月") and not nested_conflict("沈三", "沈三哥")
    assert not nested_conflict("青山", "沈青山")


def test_homonyms_in_one_scene_are_two_people() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("陈默", title="掌柜")]), table)
    out = resolve(
        chapter(characters=[person("陈默", title="掌柜"), person("陈默", "小陈默", title="巡警")]),
        table,
    )
    assert names(out) == ["陈默", "陈默（巡警）"]
    assert table.homonyms("character", "陈默") == ["陈默", "陈默（巡警）"]


def test_qualified_name_and_bare_name_routed_by_title() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("陈默", "陈掌柜", title="掌柜")]), table)
    resolve(chapter(characters=[person("陈默（巡警）", "小陈默", "陈默", title="巡警")]), table)
    assert table.canonical("character", "陈默") == "陈默"  # the bare name was not re-pointed
    out = resolve(
        chapter(
            characters=[person("陈默", title="巡警"), person("沈青山")],
            character_relationships=[rel("陈默", "沈青山")],
        ),
        table,
    )
    assert names(out) == ["陈默（巡警）", "沈青山"]
    assert out.character_relationships[0].source == "陈默（巡警）"
    out = resolve(chapter(characters=[person("陈默", description="归燕客栈的掌柜")]), table)
    assert names(out) == ["陈默"]


def test_a_stripped_honorific_with_a_contradicting_title_is_a_new_homonym() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("陈默", title="掌柜")]), table)
    out = resolve(chapter(characters=[person("小陈默", title="巡警")]), table)
    assert names(out) == ["陈默（巡警）"]


def test_forms_of_address_and_given_names_link_to_the_cast() -> None:
    table = AliasTable()
    resolve(
        chapter(
            characters=[
                person("孙有福", title="掌柜"),
                person("陈默", title="掌柜"),
                person("陆远山", title="先生"),
            ]
        ),
        table,
    )
    out = resolve(chapter(characters=[person("有福"), person("老陈"), person("陆先生")]), table)
    assert names(out) == ["孙有福", "陈默", "陆远山"]
    other = AliasTable()
    resolve(chapter(characters=[person("孙掌柜")]), other)
    assert names(resolve(chapter(characters=[person("孙有福", title="掌柜")]), other)) == ["孙掌柜"]


def test_relations_rewritten_and_dangling_ones_dropped_and_counted() -> None:
    table = AliasTable()
    resolve(chapter(characters=[person("沈青山", "沈三"), person("赵铁生")]), table)
    out = resolve(
        chapter(
            characters=[person("李明", "阿明"), person("李明月")],
            events=[{"name": "望江楼谈判", "participants": ["阿明", "无名氏"]}],
            locations=[{"name": "望江楼"}],
            character_relationships=[
                rel("阿明", "沈三", "FRIEND"),  # 沈青山 is known from an earlier chapter
                rel("李明", "无名氏"),  # dangling
                rel("阿明", "李明"),  # a self-relation after merging
                rel("李明", "李明月", "MENTOR_OF"),  # off-schema
                rel("沈青山", "李明", "FRIEND"),  # the same friendship, reversed
            ],
            event_relationships=[
                {"character": "阿明", "event": "望江楼谈判"},
                {"character": "李明", "event": "不存在的事件"},
            ],
            location_relationships=[
                {"event": "望江楼谈判", "location": "望江楼"},
                {"event": "望江楼谈判", "location": "月球"},
            ],
        ),
        table,
    )
    assert [(r.source, r.target, r.relation) for r in out.character_relationships] == [
        ("李明", "沈青山", "FRIEND")
    ]
    assert out.events[0].participants == ["李明"]
    assert [(r.character, r.event) for r in out.event_relationships] == [("李明", "望江楼谈判")]
    assert [(r.event, r.location) for r in out.location_relationships] == [("望江楼谈判", "望江楼")]
    assert out.dropped == {
        "relation_missing_end": 3,
        "relation_self": 1,
        "relation_type_off_schema": 1,
        "event_participant_unknown": 1,
    }


def test_relations_change_between_chapters() -> None:
    table = AliasTable()
    one = resolve(
        chapter(
            characters=[person("沈青山"), person("李明")],
            character_relationships=[rel("沈青山", "李明", "FRIEND")],
        ),
        table,
    )
    five = resolve(
        chapter(
            characters=[person("沈青山"), person("阿明", "李明")],
            character_relationships=[rel("沈青山", "阿明", "ENEMY")],
        ),
        table,
    )
    assert [r.relation for r in one.character_relationships] == ["FRIEND"]
    assert [(r.target, r.relation) for r in five.character_relationships] == [("李明", "ENEMY")]


def test_rows_round_trip_and_only_new_rows_are_saved() -> None:
    table = AliasTable()
    resolve(
        chapter(
            characters=[
                person("陈默", "陈掌柜", title="掌柜"),
                person("陈默（巡警）", "小陈默", title="巡警"),
            ]
        ),
        table,
    )
    rows = table.to_rows()
    assert table.new_rows() == rows
    table.mark_saved()
    assert table.new_rows() == []
    again = AliasTable.from_rows(rows)
    assert again.new_rows() == []
    assert again.homonyms("character", "陈默") == ["陈默", "陈默（巡警）"]
    assert again.roles("character", "陈默（巡警）") == ["巡警"]
    assert again.canonical("character", "小陈默") == "陈默（巡警）"
    assert again.roster() == {"characters": ["陈默", "陈默（巡警）"]}
    resolve(chapter(characters=[person("陈默", "老陈", title="掌柜")]), again)
    assert again.new_rows() == [
        {"entity_type": "character", "alias": "老陈", "canonical": "陈默", "kind": "alias"}
    ]


def test_mapping_reports_every_surface() -> None:
    res = resolve_with_map(chapter(characters=[person("沈青山", "沈三", "青山")]), AliasTable())
    assert res.mapping == {
        ("character", "沈青山"): "沈青山",
        ("character", "沈三"): "沈青山",
        ("character", "青山"): "沈青山",
    }
