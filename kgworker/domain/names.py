"""Name normalisation for Chinese novels: width, script, spacing, titles and honorifics.

Why a module of its own: the resolver, the rules extractor and the evaluation must agree on
when two spellings are "the same name". A name is compared by its *key*; what is shown and
stored is its *display* form (NFKC, traditional → simplified, spacing removed, qualifier
brackets as full-width ``（…）``). Titles and honorifics around a name (老/小/阿 before,
公子/姑娘/先生/大人/兄/师父/长老/… after) are removed only when at least two characters of
name remain, so 老王 or 陈叔 stay whole: one character is a surname, not a name.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from kgworker.domain.script import t2s

#: Prefixes that are forms of address, not part of a name.
HONORIFIC_PREFIXES = ("老", "小", "阿")
#: Suffixes that are forms of address or titles, longest first so 老爷 wins over 爷.
HONORIFIC_SUFFIXES = tuple(
    sorted(
        (
            "公子",
            "姑娘",
            "小姐",
            "先生",
            "大人",
            "老爷",
            "少爷",
            "夫人",
            "娘子",
            "兄",
            "大哥",
            "哥",
            "姐",
            "姐姐",
            "妹妹",
            "弟",
            "叔",
            "伯",
            "婶",
            "爷",
            "师父",
            "师傅",
            "师兄",
            "师姐",
            "师弟",
            "师妹",
            "长老",
            "掌门",
            "帮主",
            "掌柜",
            "前辈",
            "道长",
            "大师",
            "将军",
            "仙子",
            "女士",
        ),
        key=len,
        reverse=True,
    )
)
#: Common Chinese surnames (single characters), enough for fiction's named people.
SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章云苏潘"
    "葛奚范彭郎鲁韦昌马苗凤花方俞任袁柳鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬安常乐于时傅皮卞齐"
    "康伍余元卜顾孟平黄和穆萧尹姚邵湛汪祁毛禹狄米贝明臧计伏成戴谈宋茅庞熊纪舒屈项祝董梁杜阮"
    "蓝闵席季麻强贾路娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍虞万支柯管卢莫房裘缪解应宗"
    "丁宣邓郁单杭洪包诸左石崔吉龚程嵇邢裴陆荣翁荀羊惠甄家封储靳段富巫乌焦巴弓牧山谷车侯全班"
    "秋仲伊宫宁仇栾暴甘厉戎祖武符刘景詹束龙叶幸司韶黎蓟薄印宿白怀蒲邰从鄂索咸籍赖卓蔺屠蒙池"
    "乔阴胥能苍双闻莘党翟谭贡劳姬申扶堵冉宰郦雍桑桂濮牛寿通边扈燕冀郏浦尚农温别庄晏柴瞿阎充"
    "慕连茹习宦艾鱼容向古易慎戈廖庾终居衡步都耿满弘匡国文寇广禄东欧殳沃利蔚越隆师巩聂晁勾敖"
    "融冷辛阚那简饶空曾沙乜养鞠须丰巢关蒯相查后荆红游竺权逯盖益桓公岳帅欧阳"
)
#: Minimum length (characters) of what remains after removing an honorific.
MIN_NAME_LEN = 2

_SPACE = re.compile(r"\s+")
_QUOTES = "\"'“”‘’「」『』《》〈〉【】[]"
_QUALIFIED = re.compile(r"^(?P<base>.+?)\((?P<role>[^()]+)\)$")
#: Conversions remembered: a book's cast and places repeat in every chapter and are compared
#: many times each (the resolver, the answer's validation). Bounded, so a long run's memory
#: stays flat (a few MiB at most).
NAME_CACHE_SIZE = 8192
#: Longer strings (a chapter's text) are converted without being remembered.
CACHED_LENGTH = 64


def to_simplified(text: str) -> str:
    """Traditional → simplified Chinese (OpenCC's ``t2s``, run only on what it would change,
    see :mod:`kgworker.domain.script`); short strings (names) are remembered, see
    :data:`NAME_CACHE_SIZE`."""
    if len(text) <= CACHED_LENGTH:
        return _short_to_simplified(text)
    return t2s(text)


@lru_cache(maxsize=NAME_CACHE_SIZE)
def _short_to_simplified(text: str) -> str:
    return t2s(text)


@lru_cache(maxsize=NAME_CACHE_SIZE)
def display_name(name: str) -> str:
    """The stored spelling: NFKC, simplified, no spaces or wrapping quotes, ``X（role）``."""
    text = to_simplified(unicodedata.normalize("NFKC", name))
    text = _SPACE.sub("", text).strip(_QUOTES)
    match = _QUALIFIED.match(text)
    if match:
        return f"{match['base']}（{match['role']}）"
    return text


def name_key(name: str) -> str:
    """The comparison key of a name: its display form, case-folded (for Latin names)."""
    return display_name(name).casefold()


def split_qualified(name: str) -> tuple[str, str]:
    """``陈默（巡警）`` → (``陈默``, ``巡警``); an unqualified name gives (name, "")."""
    match = _QUALIFIED.match(unicodedata.normalize("NFKC", display_name(name)))
    if match:
        return match["base"], match["role"]
    return display_name(name), ""


def strip_honorifics(name: str) -> str:
    """Remove one title prefix and one honorific suffix, if enough name remains.

    ``明月姑娘`` → ``明月``, ``沈三哥`` → ``沈三``, ``老陈默`` → ``陈默``, but ``老王``,
    ``陈叔`` and ``三爷`` are kept (one character would remain).
    """
    text = display_name(name)
    if split_qualified(text)[1]:
        return text
    for suffix in HONORIFIC_SUFFIXES:
        if text.endswith(suffix) and len(text) - len(suffix) >= MIN_NAME_LEN:
            text = text[: -len(suffix)]
            break
    for prefix in HONORIFIC_PREFIXES:
        if text.startswith(prefix) and len(text) - len(prefix) >= MIN_NAME_LEN:
            text = text[len(prefix) :]
            break
    return text


def is_generic(name: str) -> bool:
    """True for a bare form of address with no name in it (先生, 老掌柜, 姑娘): never an alias."""
    text = display_name(name)
    changed = True
    while text and changed:
        changed = False
        for suffix in HONORIFIC_SUFFIXES:
            if text.endswith(suffix):
                text, changed = text[: -len(suffix)], True
                break
        for prefix in HONORIFIC_PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix) :], True
                break
    return not text


def is_affix_only(longer: str, shorter: str) -> bool:
    """True if ``longer`` is ``shorter`` plus only honorific affixes (沈三哥 vs 沈三)."""
    return strip_honorifics(longer) == shorter or is_generic(longer.replace(shorter, "", 1))


def nested_conflict(a: str, b: str) -> bool:
    """True for two different names where one extends the other at the end: 李明 / 李明月.

    Such pairs name different people far more often than not, so an alias claiming that one
    is the other is not trusted. An honorific extension (沈三 / 沈三哥) or a surname in
    front (青山 / 沈青山) is not a conflict.
    """
    a, b = display_name(a), display_name(b)
    if a == b:
        return False
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return long_.startswith(short) and not is_affix_only(long_, short)


def address_surname(name: str) -> str | None:
    """The surname in a bare form of address: 老陈 → 陈, 孙掌柜 → 孙, 陆先生 → 陆, 陈叔 → 陈.

    Such forms name a person only together with the story's cast, so the resolver links them
    to a known character with that surname when exactly one fits.
    """
    text = display_name(name)
    bare = text
    for prefix in HONORIFIC_PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix) :]
            break
    for suffix in HONORIFIC_SUFFIXES:
        if bare.endswith(suffix):
            bare = bare[: -len(suffix)]
            break
    if bare != text and len(bare) == 1 and bare in SURNAMES:
        return bare
    return None
