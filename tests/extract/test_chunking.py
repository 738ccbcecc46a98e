"""Chunking: nothing is cut silently, chunks respect the budget, cuts fall on sentence ends,
and anything short enough to be a name is seen whole in some chunk."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgworker.domain.chunking import (
    DEFAULT_CHUNK_BUDGET,
    estimate_tokens,
    split_into_chunks,
)
from kgworker.eval.gold import load_novel

# Text made of CJK words, Latin words, spaces, and sentence/clause punctuation with quotes.
PIECES = st.sampled_from(
    [
        "李明",
        "李明月",
        "沈青山",
        "说",
        "道",
        "江水",
        "Hello",
        "world",
        " ",
        "\n",
        "。",
        "！",
        "？",
        "，",
        "、",
        "」",
        "”",
        ". ",
        "?",
        "…",
        "3.14",
        "ＡＢＣ",
        "３号货仓",
        "abcdefghijklmnop",
    ]
)
TEXTS = st.lists(PIECES, min_size=0, max_size=300).map("".join)


def _check(text: str, budget: int, overlap: int | None) -> None:
    chunks = split_into_chunks(text, budget, overlap)
    if not text.strip():
        assert chunks == []
        return
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text)
    for prev, nxt in pairwise(chunks):
        assert prev.start < nxt.start <= prev.end  # progress, and no gap: the union is the text
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.text == text[c.start : c.end]
        assert c.tokens <= budget
        assert estimate_tokens(c.text) <= c.tokens


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.integers(8, 80), st.integers(0, 3))
def test_chunks_cover_the_text_within_budget(text: str, budget: int, tenth: int) -> None:
    _check(text, budget, budget * tenth // 10)


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.integers(8, 80))
def test_default_overlap_adapts_to_small_budgets(text: str, budget: int) -> None:
    _check(text, budget, None)


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.integers(20, 80), st.data())
def test_a_name_sized_span_is_whole_in_some_chunk(
    text: str, budget: int, data: st.DataObject
) -> None:
    """Any run of word characters that fits the overlap lies inside one chunk (names never
    straddle a cut unseen), including inside hard-split over-long sentences."""
    overlap = budget // 4
    chunks = split_into_chunks(text, budget, overlap)
    words = [m for m in re.finditer(r"[^\W_]+", text) if estimate_tokens(m.group()) <= overlap]
    if not words:
        return
    m = data.draw(st.sampled_from(words))
    a = data.draw(st.integers(m.start(), m.end() - 1))
    b = data.draw(st.integers(a + 1, m.end()))
    assert any(c.start <= a and b <= c.end for c in chunks)


def test_cuts_fall_after_sentence_ends_and_closing_quotes() -> None:
    sentence = "他说：“我们明天去青石渡。”"
    text = sentence * 40
    chunks = split_into_chunks(text, 100, 20)
    assert len(chunks) > 1
    for c in chunks[:-1]:
        assert c.text.endswith("。”")
    for c in chunks[1:]:
        assert c.text.startswith("他说")


def test_latin_sentences_cut_after_period_not_inside_numbers() -> None:
    text = "It was 3.14 pm. Then he left! " * 30
    for c in split_into_chunks(text, 30, 5)[:-1]:
        assert c.text.rstrip().endswith((".", "!")) and not c.text.rstrip().endswith("3.")


def test_an_overlong_sentence_is_hard_split_with_overlap() -> None:
    text = "江" * 1000 + "。"
    chunks = split_into_chunks(text, 300, 30)
    assert len(chunks) >= 4
    assert all(c.tokens <= 300 for c in chunks)
    for prev, nxt in pairwise(chunks):
        assert prev.end - nxt.start == 30  # overlapping by the overlap budget


def test_clause_marks_are_preferred_to_arbitrary_cuts() -> None:
    text = "，".join(["沈青山走过码头"] * 60) + "。"
    for c in split_into_chunks(text, 50, 8)[:-1]:
        assert c.text.endswith("，")


def test_token_estimate_rule() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("沈青山") == 3
    assert estimate_tokens("。！") == 2
    assert estimate_tokens("hello world") == 3  # ceil(2 * 1.3)
    assert estimate_tokens("a" * 16) == 3  # a 16-letter word counts as two words
    assert estimate_tokens("  \n ") == 0


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_the_estimate_is_what_a_whole_chunk_counts(text: str) -> None:
    # estimate_tokens counts in exact tenths; a chunk sums its atoms' float costs
    chunks = split_into_chunks(text, 10**6)
    assert estimate_tokens(text) == (chunks[0].tokens if chunks else 0)


def test_small_text_is_one_chunk_and_blank_is_none() -> None:
    assert split_into_chunks("  \n") == []
    (only,) = split_into_chunks("沈青山回来了。")
    assert (only.start, only.end, only.tokens) == (0, 7, 7)


@pytest.mark.parametrize(("budget", "overlap"), [(7, 0), (100, 50), (100, -1)])
def test_invalid_parameters_are_refused(budget: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        split_into_chunks("沈青山", budget, overlap)


def test_gold_novel_has_chapters_over_the_default_budget() -> None:
    novel = load_novel()
    over = [c.number for c in novel.chapters if estimate_tokens(c.text) > DEFAULT_CHUNK_BUDGET]
    assert len(novel.chapters) >= 6
    assert len(over) >= 3
    for chapter in novel.chapters:
        _check(chapter.text, DEFAULT_CHUNK_BUDGET, None)
