"""The rules extractor: people on evidence, forms of address as aliases, places by suffix,
relations typed by explicit cues — on the gold novel and on passages that are not from it
(红楼梦-, wuxia- and small-town-style), to show the rules are not this book's names."""

from __future__ import annotations

from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.domain.names import split_qualified
from kgworker.domain.resolution import AliasTable, resolve
from kgworker.eval.gold import load_novel
from kgworker.rules.extractor import RulesExtractor

TEXT = "张无忌说：“赵敏，我们去光明顶。”赵敏笑了。张无忌又说：“赵敏，明教的人在等。”"
WUXIA = (
    "令狐冲道：“师父，弟子知错了。”岳不群哼了一声，说道：“你这逆徒！”令狐冲笑道："
    "“小师妹，我没事。”田伯光大笑道：“令狐兄，咱们再喝一坛！”令狐冲是岳不群的徒弟。"
    "令狐冲和田伯光在华山脚下喝酒。岳不群回到华山派，把令狐冲叫到思过崖。"
)
HONGLOU = (
    "贾母笑道：“你们姐妹们说话，我去歇一歇。”宝玉忙道：“老祖宗只管去。”黛玉听了，抿嘴一笑。"
    "凤姐笑道：“太太放心。”宝玉又说：“林妹妹，我给你带了新茶。”黛玉道：“谁要你的茶。”"
    "贾宝玉道：“林姑娘在潇湘馆。”宝二爷点点头。贾宝玉笑了。凤姐又道：“快去吧。”"
)
TOWN = (
    "王德发在福来客栈门口站了一会儿。伙计喊道：“王掌柜，码头上来人了！”王掌柜点点头，转身进了屋。"
    "周大山从街上走过来，笑着说：“老王，今天生意好啊。”王德发说：“周大哥，进来喝碗茶。”"
    "周大山是王德发的老朋友。两个人在福来客栈坐到天黑。"
)
SCENERY = (
    "江水还是那样黄，石阶还是那样滑。沙滩上停着一条船，船头结了薄冰。高山流水，白云苍狗。"
    "马车从大路上驶过，金子一样的阳光洒在石桥上。"
)


def chapter(
    text: str, novel_id: int = 1, roster: dict[str, list[str]] | None = None
) -> ChapterInput:
    return ChapterInput(
        novel_id=novel_id, chapter_id=1, chapter_number=1, title="", content=text, task_id=1,
        roster=roster or {},
    )


async def extract(
    text: str,
    options: ExtractionOptions | None = None,
    roster: dict[str, list[str]] | None = None,
) -> ChapterExtraction:
    options = options or ExtractionOptions()
    return await RulesExtractor().extract(chapter(text, roster=roster), options)


def people(out: ChapterExtraction) -> dict[str, list[str]]:
    return {c.name: c.aliases for c in out.characters}


def relations(out: ChapterExtraction) -> set[tuple[str, str, str]]:
    return {(r.relation, r.source, r.target) for r in out.character_relationships}


async def test_finds_the_main_characters_of_the_gold_novel() -> None:
    novel = load_novel()
    extractor, table = RulesExtractor(), AliasTable()
    found: set[str] = set()
    for ch in novel.chapters:
        raw = await extractor.extract(chapter(ch.text, roster=table.roster()), ExtractionOptions())
        assert raw.extracted_by == "rule"
        found |= {c.name for c in resolve(raw, table).characters}
    assert set(novel.main_characters) <= found


async def test_no_common_noun_is_a_character_of_the_gold_novel() -> None:
    """沙滩, 石阶 and 薄冰 are dictionary words no one says anything: never characters."""
    novel = load_novel()
    cast = {split_qualified(n)[0] for n in novel.registry["character"]}
    for ch in novel.chapters:
        names = set(people(await extract(ch.text)))
        assert names <= cast, (ch.number, names - cast)


async def test_places_organizations_and_protagonist() -> None:
    novel = load_novel()
    out = await extract(novel.chapters[3].text)
    assert {"望江楼", "归燕客栈"} <= {p.name for p in out.locations}
    assert {"水上巡警队", "铁锚帮"} <= {o.name for o in out.organizations}
    assert "沈青山" not in {p.name for p in out.locations}  # a person ending in 山 is no mountain
    assert "二楼" not in {p.name for p in out.locations}  # a floor, not a place name
    top = max(out.characters, key=lambda c: c.protagonist_score)
    assert top.name == "沈青山"


async def test_wuxia_names_compound_surname_and_a_master() -> None:
    out = await extract(WUXIA)
    cast = people(out)
    assert {"令狐冲", "岳不群", "田伯光"} <= set(cast)
    assert "令狐兄" in cast["令狐冲"]  # compound surname + 兄
    assert ("FOLLOWS", "令狐冲", "岳不群") in relations(out)  # 令狐冲是岳不群的徒弟
    assert "华山派" in {o.name for o in out.organizations}


async def test_honglou_given_names_and_forms_through_the_roster() -> None:
    alone = people(await extract(HONGLOU))
    assert set(alone) == {"贾母", "贾宝玉", "黛玉", "凤姐"}  # they speak: 笑道, 道, 听了
    assert alone["贾宝玉"] == ["宝玉", "宝二爷"]  # the given name; its first character + rank + 爷
    known = people(await extract(HONGLOU, roster={"characters": ["林黛玉"]}))
    assert "黛玉" not in known  # the book knows her full name: 黛玉 is a form of it
    assert known["林黛玉"] == ["黛玉", "林妹妹", "林姑娘"]


async def test_small_town_forms_of_address_and_friendship() -> None:
    out = await extract(TOWN)
    cast = people(out)
    assert set(cast["王德发"]) == {"王掌柜", "老王"}
    assert cast["周大山"] == ["周大哥"]
    assert next(c.title for c in out.characters if c.name == "王德发") == "掌柜"
    assert ("FRIEND", "周大山", "王德发") in relations(out)  # 是…的老朋友, in the narration
    assert [p.name for p in out.locations] == ["福来客栈"]


async def test_traditional_script_is_read_as_simplified() -> None:
    out = await extract(
        "趙鐵生說：「走吧，這個時候還來得及。」趙鐵生笑道：「好。」李明點點頭，說：「我們走。」"
    )
    assert set(people(out)) == {"赵铁生", "李明"}


async def test_scenery_has_no_characters() -> None:
    out = await extract(SCENERY)
    assert out.characters == []


async def test_ambiguous_forms_stay_apart() -> None:
    out = await extract(
        "李大山笑道：“走吧。”李小山说：“好。”李大山和李小山坐下喝茶。李先生来了，李先生道：“二位好。”"
    )
    cast = people(out)
    assert set(cast) == {"李大山", "李小山"}
    assert all("李先生" not in aliases for aliases in cast.values())  # two 李 fit: neither


async def test_one_name_two_roles_is_two_people() -> None:
    out = await extract(
        "客栈的掌柜叫王福。王掌柜笑道：“客官里面请。”门外进来一个捕头，他说：“我姓王，也叫王福。”"
        "王捕头坐下，王掌柜给他倒茶。王捕头道：“这碗茶我记下了。”王掌柜点点头。"
    )
    assert [(c.name, c.title, c.aliases) for c in out.characters] == [
        ("王福", "掌柜", ["王掌柜"]),
        ("王福", "捕头", ["王捕头"]),
    ]
    assert [c.name for c in resolve(out, AliasTable()).characters] == ["王福", "王福（捕头）"]


async def test_aliases_merge_through_the_alias_table() -> None:
    """Forms of address are the Character's aliases, so resolution files them under the
    full name: a later chapter that only says 王掌柜 lands on 王德发."""
    table = AliasTable()
    resolve(await extract(TOWN), table)
    later = await extract("王掌柜笑道：“今天关门。”王掌柜又说：“明天再来。”")
    assert [c.name for c in resolve(later, table).characters] == ["王德发"]


async def test_relation_cues_and_counts() -> None:
    out = await extract(
        "赵大刀笑道：“来吧。”钱二虎说：“来就来。”赵大刀把钱二虎打倒在地。钱二虎骂道：“你等着。”"
        "孙小红喜欢李寻欢。孙小红笑道：“李寻欢，你好。”李寻欢说：“你好。”"
    )
    assert relations(out) == {("ENEMY", "赵大刀", "钱二虎"), ("LOVES", "孙小红", "李寻欢")}
    met = await extract(
        "张三说：“走。”李四说：“好。”张三和李四出了门。张三看着李四。李四笑了，张三也笑了。"
    )
    (knows,) = met.character_relationships
    assert (knows.relation, knows.strength) == ("KNOWS", 0.6)  # three sentences: 3 / 5
    twice = await extract(TEXT)
    assert twice.character_relationships == []  # two meetings are not enough for KNOWS
    off = await extract(WUXIA, ExtractionOptions(enable_relation_extraction=False))
    assert off.character_relationships == []


async def test_roster_confirms_a_name_seen_once() -> None:
    line = "永昌商行的孙有福，上个月不肯交钱。"
    assert people(await extract(line)) == {}
    assert "孙有福" in people(await extract(line, roster={"characters": ["孙有福"]}))


async def test_books_are_kept_per_novel_and_bounded() -> None:
    extractor = RulesExtractor(books=2)
    for novel_id in (1, 2, 3):
        roster = {"characters": [f"孙有{'福禄寿'[novel_id - 1]}"]}
        await extractor.extract(chapter("没有人。", novel_id, roster), ExtractionOptions())
    assert list(extractor._books) == [2, 3]
    assert {p.name for p in extractor._books[3].people.values()} == {"孙有寿"}


async def test_config_patterns_and_filter_words() -> None:
    options = ExtractionOptions(
        rule_config={
            "character_patterns": [r"(小龙女)"],
            "location_patterns": [r"古墓"],
            "filter_words": ["赵敏"],
        }
    )
    out = await extract(TEXT + "小龙女住在古墓。", options)
    names = {c.name for c in out.characters}
    assert "小龙女" in names and "赵敏" not in names
    assert "古墓" in {p.name for p in out.locations}


async def test_entity_types_and_toggles_are_honoured() -> None:
    only_people = ExtractionOptions(entity_types=("人物",))
    out = await extract(TOWN, only_people)
    assert out.characters and not out.locations and not out.organizations
    off = await extract(TEXT, ExtractionOptions(enable_entity_extraction=False))
    assert off.entity_count == 0
