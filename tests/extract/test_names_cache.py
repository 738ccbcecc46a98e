"""Name normalisation is remembered for names, bounded, and never for a chapter's text."""

from __future__ import annotations

from kgworker.domain import names


def test_names_are_converted_once_and_the_cache_is_bounded() -> None:
    names.display_name.cache_clear()
    assert names.display_name("陳 默") == "陈默"
    assert names.display_name("陳 默") == "陈默"
    info = names.display_name.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 1, names.NAME_CACHE_SIZE)
    for n in range(names.NAME_CACHE_SIZE + 10):
        names.display_name(f"林{n}")
    assert names.display_name.cache_info().currsize == names.NAME_CACHE_SIZE


def test_long_text_is_converted_but_not_remembered() -> None:
    text = "這是一個很長的句子，" * 10
    assert len(text) > names.CACHED_LENGTH
    names._short_to_simplified.cache_clear()
    assert names.to_simplified(text) == "这是一个很长的句子，" * 10
    assert names._short_to_simplified.cache_info().currsize == 0
    assert names.to_simplified("蘇晴") == "苏晴"
    assert names._short_to_simplified.cache_info().currsize == 1
