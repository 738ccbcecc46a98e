"""Word lists of Chinese fiction the rules extractor reasons with.

Why lists and not a model: a reader recognises a name by what surrounds it (someone *says*,
*nods*, is *called*, is addressed as 先生), a place by its last word (…渡, …寺, …客栈) and a
gang by its (…帮, …镖局). These lists are genre-wide (wuxia, 红楼梦-style family novels,
Republican-era towns), never the names of one book.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Two-character surnames; single characters come from :data:`kgworker.domain.names.SURNAMES`.
COMPOUND_SURNAMES = _words(
    "欧阳 司马 上官 诸葛 东方 令狐 慕容 独孤 南宫 西门 公孙 长孙 皇甫 尉迟 夏侯 轩辕 端木 宇文 "
    "司徒 司空 呼延 百里 东郭 澹台 完颜 拓跋 耶律 钟离 闻人 濮阳 万俟"
)

#: After a surname these make a form of address, not a given name (陆先生, 孙掌柜, 陈叔).
HONORIFICS = _words(
    "先生 公子 姑娘 小姐 大人 老爷 少爷 太太 夫人 娘子 相公 大侠 女侠 前辈 道长 大师 师太 "
    "兄 老弟 老兄 大哥 大姐 大嫂 哥哥 姐姐 妹妹 弟弟 哥 姐 嫂 弟 妹 叔 伯 婶 姨 舅 姑 爷 奶奶 "
    "大爷 大娘 老大 老二 老三 老四 老五 妈 娘 婆 氏"
)
#: Forms of address that tell a woman (明月姑娘) or a man (沈三哥): 他 and 她 follow them.
FEMALE_FORMS = tuple(
    _words("姑娘 小姐 夫人 太太 娘子 姐 妹 嫂 婶 姨 奶奶 大娘 师太 女侠 妈 娘 婆 氏 姑")
)
MALE_FORMS = tuple(_words("先生 公子 少爷 老爷 相公 大侠 哥 弟 兄 叔 伯 舅 爷 老大 掌柜 巡警"))
#: Occupational roles: 王掌柜 is the 掌柜 named 王…; two different roles on one surname
#: and one full name in a scene mean two people who share that name.
ROLES = _words(
    "掌柜 老板 东家 伙计 管家 账房 巡警 警官 捕头 捕快 班头 县令 知县 知府 大夫 郎中 "
    "将军 校尉 统领 帮主 堂主 舵主 掌门 长老 镖头 总镖头 庄主 寨主 队长 局长 司令 "
    "师傅 师父 师兄 师姐 师弟 师妹 老师 教头"
)
#: Role synonyms: the same person may be 掌柜 to one speaker and 老板 to another.
ROLE_GROUPS = {"老板": "掌柜", "东家": "掌柜", "郎中": "大夫", "捕快": "捕头", "班头": "捕头",
               "知县": "县令", "师傅": "师父", "警官": "巡警"}
#: Ranks among siblings: 沈三, 宝二爷, 沈家老三.
RANKS = frozenset("大二三四五六七八九十")
#: A word that follows a rank and makes it a count, not a name (三年, 三个).
COUNTERS = frozenset("年月日天次回个只条位句声口步里斤两岁遍趟层间家人百千万十点分")
#: Prefixes of familiar address: 老陈, 小陈默, 阿明.
FAMILIAR = ("老", "小", "阿")

#: Words a speaker or an agent does: a name right before one is a person (道, 笑道, 点头).
SPEECH_VERBS = _words(
    "道 说 说道 问 问道 答 答道 喊 喊道 叫道 嚷 嚷道 骂 骂道 叹道 笑道 喝道 吼道 哭道 "
    "应道 回答 开口 插嘴 说话 告诉 嘀咕 念叨 低声道 冷笑道 怒道 劝"
)
HUMAN_ACTIONS = _words(
    "笑 笑了 笑着 大笑 哭 叹 叹气 叹了口气 点头 点点头 摇头 摇摇头 皱眉 皱起眉头 冷笑 微笑 苦笑 "
    "愣 愣住 一愣 愣住了 站 站起 站起来 站住 坐 坐下 蹲 跪 躺 走 走过来 走出 跑 转身 回头 "
    "抬头 低头 伸手 拱手 作揖 咬牙 咬着牙 心想 暗想 想 想起 知道 记得 认得 觉得 明白 看 "
    "看着 望着 看见 看了看 听 听见 听了 盯着 瞪 瞧 拍 擦 挠 接过 拉 抓 推 扶 扔 端 提 "
    "拿 拿起 放下 举起 吃 喝 咧嘴 沉默 犹豫 哼 睡"
)
#: One character right after a name that makes it the speaker, however jieba cut the
#: words (贾母笑道 is one dictionary entry "贾母笑" + 道).
SPEECH_CHARS = frozenset("道说问答喊叫骂笑哭叹")
#: Tokens allowed between a name and its verb: 李明也笑了, 陈默慢慢站起来.
MANNER = _words(
    "也 又 就 才 却 便 都 还 只 正 已 已经 早 忽然 突然 连忙 赶紧 急忙 赶忙 忙 慢慢 轻轻 默默 "
    "悄悄 低声 冷冷 笑着 一边 不禁 终于 这才 随即 立刻 马上 微微 一 着 了 地 不 没 没有"
)
#: Before a name: it is being named (叫赵铁生的人, 掌柜叫陈默).
NAMING_CUES = ("名叫", "叫做", "唤作", "名字叫", "叫", "姓")
#: After "NAME的": things only people have.
PERSONAL_NOUNS = _words(
    "手 脸 眼睛 眼 声音 背影 身后 身边 肩膀 脚 右脚 左脚 头 嘴 嘴唇 心 话 笑 眉头 脸色 "
    "妹妹 妹子 哥哥 姐姐 弟弟 父亲 母亲 爹 娘 妻子 丈夫 儿子 女儿 老师 师父 朋友 徒弟 "
    "学生 手下 名字 命"
)
#: After a word: it is a thing or a place someone is on or in (沙滩上, 石阶上).
LOCATIVES = _words("上 下 里 中 内 外 边 旁 底 顶 间 口 头上 里面 上面 下面 旁边 边上")
#: Characters that cannot start or continue a given name (function words, pronouns, counters).
NOT_NAME_CHARS = frozenset(
    "的了着过是在和与跟同及也又就都还才把被将对向从给让叫说道问笑看听想不没很太最这那哪谁"
    "他她它我你您们吗呢吧啊呀么个些一上下里中外前后左右来去到得地之而且但却若如因所以于为"
    "乃即便则家氏某等每各该此其几啥怎要会能可已曾再更只"
)

#: Common nouns jieba tags as person names, and words that look like surname + name.
STOP_NAMES = _words(
    "沙滩 石阶 薄冰 冷笑 老槐树 石头 石桥 石门 江水 江面 江心 江边 金子 马车 马路 马上 "
    "白天 白云 黄昏 黄金 高兴 明天 明白 常常 方向 文章 江湖 江山 天下 安全 平安 和尚 "
    "老人家 老头 老头子 老太太 老婆 老板娘 公子哥 老百姓 向来 于是 连忙 成功 高手 "
    "花园 林子 柳树 杨柳 钱财 云雾 雷声 龙王 凤凰 田地 毛病 时候 应该 关于 周围 周年"
)

#: Places by their last word. Reliable ones name a place after one mention (…渡, …客栈);
#: the others (…山, …门) also end ordinary words, so they need two.
PLACE_SUFFIXES_RELIABLE = _words(
    "客栈 酒楼 茶楼 酒馆 茶馆 饭庄 货仓 仓库 码头 渡口 驿站 书院 祠堂 道观 "
    "渡 镇 村 县 府 州 郡 寺 庙 观 庵 庄 寨 堡 洲 岛 峡 岭 峰 楼"
)
PLACE_SUFFIXES_WEAK = _words("山 谷 洞 湖 江 河 溪 关 港 巷 街 桥 宫 殿 阁 亭 园 城 坡 崖 林")
ORG_SUFFIXES_RELIABLE = _words(
    "镖局 商行 商号 钱庄 银号 当铺 武馆 巡警队 警察局 衙门 公司 商会 帮会 帮 派 宗 盟 堂口"
)
ORG_SUFFIXES_WEAK = _words("门 会 教 局 社 军 营 队 堂")
#: A place or organization name does not start with these (二楼, 后山, 这座楼, 老客栈).
PLACE_BAD_STARTS = frozenset(
    "一二三四五六七八九十百千几两上下前后左右东西南北中内外里这那哪每各本该此其某整全半"
    "老新旧大小高低破空满远近深浅长短"
)
#: Numbered places: ３号货仓 (after NFKC: 3号货仓).
NUMBERED_PLACE = r"[0-9一二三四五六七八九十]{1,3}号(?:货仓|仓库|码头|楼|院|房|门|库|仓)"

#: Relation cues, looked for in a sentence naming both people (contract types).
ENEMY_NOUNS = ("仇人", "仇敌", "敌人", "死敌", "对头", "宿敌", "冤家", "反目", "决斗", "厮杀")
#: Hostile acts, after "把/朝/给/被… B" in the clause naming B: 把赵铁生撞翻 (ENEMY).
HOSTILE_ACTS = ("撞翻", "打倒", "打翻", "打死", "杀了", "杀死", "刺死", "砍", "扑了过去", "扑向",
                "扑过去", "手铐", "铐上", "擒住", "捉住", "绑了", "揍", "踢翻", "刺")
#: What stands before the victim of a hostile act.
HOSTILE_PREPOSITIONS = ("把", "将", "朝", "向", "对", "给", "被", "冲")
FRIEND_CUES = ("朋友", "好友", "挚友", "知己", "发小", "结拜", "伙伴", "同伴", "兄弟")
LOVE_CUES = ("喜欢", "爱慕", "爱上", "深爱", "心上人", "恋人", "情人", "相好", "定情", "娶",
             "嫁给", "成亲", "倾心")
HATE_CUES = ("恨透", "痛恨", "憎恨", "怨恨", "恨")
#: "A的徒弟B": B follows A; "A的师父B": B leads A.
FOLLOWER_NOUNS = ("徒弟", "弟子", "手下", "部下", "仆人", "丫鬟", "小厮", "随从", "跟班",
                  "属下", "学生", "书童", "家丁", "侍卫")
LEADER_NOUNS = ("师父", "师傅", "主人", "老师", "上司", "首领", "东家", "主子", "帮主", "掌门")
#: "A跟着B", "A投靠B": A follows B.
FOLLOW_VERBS = ("投靠", "追随", "效忠", "跟随", "听命于", "拜")
#: "A吩咐B": A leads B.
LEAD_VERBS = ("吩咐", "命令", "差遣", "派")
#: Family words: kin know each other (the contract has no family type).
KIN_NOUNS = ("哥哥", "姐姐", "妹妹", "弟弟", "妹子", "父亲", "母亲", "儿子", "女儿", "爹", "娘",
             "叔叔", "伯伯", "舅舅", "姑姑", "侄子", "侄女", "外甥", "表哥", "表妹", "表姐")
SPOUSE_NOUNS = ("妻子", "丈夫", "夫人", "娘子", "相公", "未婚妻", "未婚夫", "夫妻")
#: "成了仇人", "成为朋友": the state named after these is the relation now.
BECOME = ("成了", "成为", "变成", "做了")
