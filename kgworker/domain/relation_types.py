"""Map free-form character relations onto the seven types the chaishu app understands.

Models answer "师父", "lover", "rival" or "Friend"; the app only draws FRIEND, ENEMY,
LOVES, HATES, KNOWS, LEADS and FOLLOWS (docs/chaishu-compat.md §3). Anything else is mapped here
or dropped (and counted by the caller). The allow-list is also what keeps relation types
out of Cypher text: a type is only ever one of these seven literals.
"""

from __future__ import annotations

import unicodedata

from kgworker.domain.extraction import CHARACTER_RELATION_TYPES

ALLOWED = frozenset(CHARACTER_RELATION_TYPES)

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "FRIEND": ("friend", "friends", "ally", "companion", "朋友", "好友", "友人", "盟友", "伙伴",
               "同伴", "挚友", "知己", "兄弟", "结拜", "义兄", "义弟", "同门", "师兄", "师弟",
               "师姐", "师妹", "战友"),
    "ENEMY": ("enemy", "enemies", "rival", "opponent", "foe", "敌人", "仇人", "对手", "宿敌",
              "敌对", "仇敌", "死敌", "竞争"),
    "LOVES": ("love", "loves", "lover", "spouse", "husband", "wife", "couple", "crush",
              "爱", "爱慕", "喜欢", "恋人", "情侣", "夫妻", "妻子", "丈夫", "未婚妻", "未婚夫",
              "暗恋", "倾慕", "心上人", "道侣"),
    "HATES": ("hate", "hates", "resent", "恨", "憎恨", "怨恨", "痛恨", "厌恶"),
    "KNOWS": ("know", "knows", "acquaintance", "family", "relative", "sibling", "parent",
              "child", "认识", "相识", "熟人", "旧识", "同学", "同事", "邻居", "亲戚", "家人",
              "父子", "母子", "父女", "母女", "兄妹", "姐弟", "姐妹", "亲人"),
    "LEADS": ("lead", "leads", "leader", "master", "teacher", "mentor", "boss", "commands",
              "领导", "上司", "首领", "主人", "师父", "师傅", "老师", "导师", "统领", "掌门"),
    "FOLLOWS": ("follow", "follows", "follower", "subordinate", "servant", "student",
                "disciple", "apprentice", "跟随", "追随", "下属", "手下", "仆人", "徒弟", "弟子",
                "学生", "部下", "侍从", "效忠"),
}
_LOOKUP: dict[str, str] = {
    word.casefold(): canonical for canonical, words in _SYNONYMS.items() for word in words
}


def normalize_relation_type(raw: str) -> str | None:
    """One of the seven allowed types, or None when ``raw`` cannot be mapped."""
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        return None
    upper = text.upper().replace(" ", "_").replace("-", "_")
    if upper in ALLOWED:
        return upper
    folded = text.casefold()
    if folded in _LOOKUP:
        return _LOOKUP[folded]
    if upper.endswith("S") and upper[:-1] in ALLOWED:
        return upper[:-1]
    for word, canonical in _LOOKUP.items():  # "师父与徒弟" → first known word inside
        if len(word) > 1 and not word.isascii() and word in text:
            return canonical
    return None
