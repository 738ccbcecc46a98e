"""The t2s fast path gives what OpenCC gives, and skips OpenCC where nothing would change."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st
from opencc import OpenCC

from kgworker.domain import script
from kgworker.domain.names import to_simplified
from kgworker.eval.gold import default_novel

TRADITIONAL = (
    "林風與蘇晴並肩走出長安城，身後的鐵掌幫弟子面面相覷。「師兄，我們明日去哪裡？」"
    "沈默良久，他才答覆道：“反覆思量之後，我決定回覆掌門。”一目瞭然，找藉口也無用。\n"
    "雲層後的陽光灑在臺階上；遠處傳來鐘聲——這一切，彷彿一場夢！"
)


@cache
def _opencc() -> OpenCC:
    return OpenCC("t2s")


def reference(text: str) -> str:
    return str(_opencc().convert(text))


def test_gold_novel_converts_as_opencc_does() -> None:
    novel = default_novel()
    changed = 0
    for chapter in novel.chapters:
        assert script.t2s(chapter.text) == reference(chapter.text)
        assert to_simplified(chapter.text) == reference(chapter.text)
        changed += reference(chapter.text) != chapter.text
    assert changed  # the gold novel has traditional characters in places (鐵, 趙, …)


def test_traditional_text_converts_as_opencc_does() -> None:
    expected = reference(TRADITIONAL)
    assert expected != TRADITIONAL
    assert "沉默" in expected and "反复" in expected  # phrases of unchanging characters
    assert script.t2s(TRADITIONAL) == expected
    for line in TRADITIONAL.splitlines():
        assert to_simplified(line) == reference(line)


def test_every_changing_dictionary_entry_is_triggered() -> None:
    for name in script.T2S_DICTIONARIES:
        for key, value in script._entries(name):
            converted = reference(key)
            assert script.t2s(key) == converted
            if value != key:
                assert script.needs_conversion(key), key


def test_simplified_text_without_triggers_is_returned_as_it_is() -> None:
    text = "风吹过落霞镇，李长老与王虎并肩而立，良久无言。"
    assert not script.needs_conversion(text)
    assert script.t2s(text) is text


# Characters a trigger may sit next to: separators OpenCC splits at, Latin, simplified text.
_ALPHABET = sorted(set(TRADITIONAL + "沈默反覆瞭然藉口乾隆著名了解，。 \n-,.?!*ab1"))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_any_mix_converts_as_opencc_does(text: str) -> None:
    assert script.t2s(text) == reference(text)
