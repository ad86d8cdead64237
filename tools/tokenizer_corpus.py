#!/usr/bin/env python3
"""Writes the tokenizer golden corpus: one JSON string per line (JSON so that lines may hold newlines and CR).

Deterministic: a fixed seed and the Debian bible-kjv text (the `bible` command). The categories cover what a
byte-level BPE tokenizer must get exactly right: English prose, code, numbers, whitespace runs, tabs, CRLF, emoji
with ZWJ sequences and skin tones, CJK, RTL and Indic scripts, NFD input, inline special tokens, oddities, and a
sweep of code points across Unicode (including the letters, numbers and marks whose tables differ between
PCRE2/utf8proc and the engines HF tokenizers uses).

usage: python3 tools/tokenizer_corpus.py [OUT]   (default tests/data/tokenizer/corpus.jsonl)
"""
import json
import random
import re
import subprocess
import sys
import unicodedata

SEED = 20240602
rng = random.Random(SEED)


def bible_verses():
    """The KJV as one verse per string; the `bible` command wraps verses at 80 columns and heads chapters."""
    text = subprocess.run(["bible", "Genesis 1:1-Revelation 22:21"], check=True, capture_output=True,
                          text=True).stdout
    verses, cur = [], None
    for line in text.split("\n"):
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            if cur is not None:
                verses.append(cur)
            cur = m.group(2).strip()
        elif not line.strip():
            if cur is not None:
                verses.append(cur)
            cur = None
        elif cur is not None:
            cur += " " + line.strip()
    if cur is not None:
        verses.append(cur)
    return verses


def prose(verses):
    out = []
    picks = rng.sample(range(len(verses)), 520)
    for i in picks:
        out.append(verses[i])
    for _ in range(60):  # paragraphs: several verses, newline separated, sometimes with blank lines or CRLF
        i = rng.randrange(len(verses) - 5)
        sep = rng.choice(["\n", "\n\n", "\r\n", " ", "\n  "])
        out.append(sep.join(verses[i:i + rng.randint(2, 5)]))
    for _ in range(40):
        v = verses[rng.randrange(len(verses))]
        out.append(rng.choice([v.upper(), v.lower(), v.title(), v.replace(" ", "  "), "  " + v + "  ",
                               v.replace(",", " ,"), "\t" + v]))
    out += [
        "I'm sure you'll see they've said it's done; we'd rather he'd not.",
        "I'M SURE YOU'LL SEE THEY'VE SAID IT'S DONE; WE'D RATHER HE'D NOT.",
        "Don't, won't, can't, shan't, y'all, o'clock, rock'n'roll, 'tis, 'twas.",
        "He said \u201cit\u2019s fine\u201d and she said \u2018no\u2019.",
        "Mr. O'Neil's dog's bone; the dogs' bones; James's book.",
        "It'S It'T We'Re I'Ve I'M You'Ll He'D", "it's'nt 's 't 're 've 'm 'll 'd '", "''''''",
        "The quick brown fox jumps over the lazy dog.",
        "Pack my box with five dozen liquor jugs!", "Sphinx of black quartz, judge my vow?",
        "e.g. i.e. etc. vs. a.m. p.m. U.S.A. Ph.D.",
        "Hello,world!How are you?Fine...thanks--and you???",
        "state-of-the-art, well-known, twenty-one, re-enter, e-mail",
        "URL: https://example.com/path?q=1&r=two#frag and mailto:someone@example.org",
        "C'est la vie; na\u00efve caf\u00e9 r\u00e9sum\u00e9 fa\u00e7ade co\u00f6perate \u00fcber Stra\u00dfe",
        "Ελληνικά: Καλημέρα κόσμε, η γρήγορη καφέ αλεπού.",
        "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Türkçe: İstanbul'da ılık bir gün; IĞDIR ığdır.",
        "Tiếng Việt: Tôi có thể ăn thủy tinh mà không hại gì.",
        "Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.",
        "Ქართული: ვეპხის ტყაოსანი; Հայերեն՝ Բարեւ աշխարհ; ᎣᏏᏲ (Cherokee).",
        "ፊደል ኢትዮጵያ (Ethiopic); ᠮᠣᠩᠭᠣᠯ (Mongolian); ཀ་ཁ་ག (Tibetan); ᐃᓄᒃᑎᑐᑦ (Syllabics).",
    ]
    return out


def code():
    snippets = [
        "int main(int argc, char **argv) {\n    printf(\"hello, world\\n\");\n    return 0;\n}",
        "for (size_t i = 0; i < n; i++) sum += a[i] * b[i];",
        "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        "class Foo(Bar):\n\tdef __init__(self, x: int = 3) -> None:\n\t\tself.x = x  # comment",
        "if __name__ == \"__main__\":\n    main()",
        "const f = async (x) => { await g(x?.y ?? 0); return `${x}!`; };",
        "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
        "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
        "<div class=\"a b\" id='x'>&lt;tag&gt; &amp; &#x41; &nbsp;</div>",
        "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\\\"c\"}}",
        "$ ls -la | grep '^d' | awk '{print $9}' > /tmp/out.txt 2>&1 && echo done",
        "x = y ** 2 // 3 % 4; z ^= ~w << 2 >> 1; a != b; c <= d; e >= f; g == h; i === j",
        "std::vector<std::pair<int, std::string>> v{{1, \"a\"}, {2, \"b\"}};",
        "    return self._cache.get(key) or self._compute(key)",
        "\t\tif (x) {\n\t\t\ty();\n\t\t}\n",
        "// TODO(someone): fix this!!!\n/* block\n * comment */",
        "matrix[i][j] += alpha * (A[i][k] - B[k][j]);",
        "@decorator(arg=1)\nasync def handler(request, *args, **kwargs): ...",
        "let re = /^[a-z0-9_-]{3,16}$/i; s.replace(/\\s+/g, ' ');",
        "git commit -m \"fix: handle CRLF\" && git push origin main",
        "\\begin{equation} E = mc^2 \\end{equation} $\\alpha_i^{2}$",
        "0x1F 0b1010 0o777 1_000_000 3.14159f 1e-9 NaN -Infinity",
        "while True:\r\n    pass\r\n",
        "import numpy as np; np.zeros((3, 4), dtype=np.float32).T @ np.ones(3)",
        "public static void main(String[] args) throws Exception { System.out.println(args.length); }",
        "<?php echo $arr['key'] ?? 'default'; ?>",
        "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }",
        "a=1;b=2;c=a+b;print(c)",
        "```python\nprint('hi')\n```",
        "- [ ] task one\n- [x] task two\n1. first\n2. second",
        "| col1 | col2 |\n|------|------|\n| a    | b    |",
    ]
    out = list(snippets)
    idents = ["foo", "bar_baz", "camelCase", "PascalCase", "SCREAMING_CASE", "x1", "__dunder__", "kiln_encode",
              "getHTTPResponseCode", "i", "tmp", "self", "this", "ptr->next", "obj.field"]
    ops = [" = ", " += ", " == ", "->", ".", "::", " && ", " || ", " << ", "[", "](", "){", "};", ", "]
    for _ in range(218):
        n = rng.randint(3, 12)
        s = rng.choice(["", "    ", "\t", "        ", "\t\t"])
        for k in range(n):
            s += rng.choice(idents) + (rng.choice(ops) if k < n - 1 else rng.choice([";", "", ")", ":", " {"]))
        if rng.random() < 0.3:
            s += rng.choice(["\n", "\r\n", "  // note", "\t# note"])
        out.append(s)
    return out


def numbers():
    out = ["0", "1", "12", "123", "1234", "12345", "123456789012345678901234567890", "-42", "+7", "3.14159",
           "1,000,000", "1.000.000,50", "$19.99", "€5", "£3.50", "¥1000", "₹500", "50%", "2024-06-02",
           "12:34:56", "+1 (555) 123-4567", "192.168.0.1", "::1", "v1.2.3-rc.4", "1e10", "6.022e23", "1/2",
           "3½", "x²+y³", "H₂O", "①②③", "Ⅻ ⅻ", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "০১২৩", "௧௨௩", "１２３４",
           "𝟎𝟏𝟐𝟑", "一二三四五", "〇", "2^64 = 18446744073709551616", "0.0000001", "999999999999",
           "π ≈ 3.14159265358979323846", "√2 ≈ 1.41421356", "10⁻⁶", "a1b2c3d4", "abc123def456", "4th 21st 2nd 3rd"]
    for _ in range(140):
        kind = rng.randrange(6)
        if kind == 0:
            out.append(str(rng.randrange(10 ** rng.randint(1, 25))))
        elif kind == 1:
            out.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}")
        elif kind == 2:
            out.append(" ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(2, 10))))
        elif kind == 3:
            out.append(f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1900, 2100)}")
        elif kind == 4:
            out.append("".join(rng.choice("0123456789.,-+eE ") for _ in range(rng.randint(5, 40))))
        else:
            out.append(f"The {rng.randint(2, 99)} men ate {rng.randint(100, 9999)} loaves in "
                       f"{rng.randint(1, 12)}.{rng.randint(0, 59)} hours.")
    return out


WS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n", " \n", "\n ", "\t\n",
      "\u00a0", "\u2003", "\u3000", "\u2009", "\u202f", "\u205f", "\u1680", "\u0085", "\u2028", "\u2029",
      "\u180e", "\u000b", "\u000c", "\u200b"]


def whitespace():
    out = ["", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n\n", " \t \t ", "\r\n\r\n\r\n", "a\rb", "a\r\nb",
           "a\n\rb", "   leading", "trailing   ", "  both  ", "a" + " " * 50 + "b", "\t" * 20, "\n" * 20,
           " " * 200, "line1\r\nline2\r\nline3\r\n", "x \n y \n\n z", "word\u00a0word", "word\u3000word",
           "a \u180e b", "x\u180e\u180ey", "\u180e", "a\u180e", "a\u0085b", "a \u2028 b", "end.\u2029next",
           "\u000b\u000c", "tab\tseparated\tvalues\there", "a\t\tb\t\t\tc"]
    words = ["alpha", "beta", "gamma", "delta", "x", "1", "!", "ü", "中", "🙂", "'s", "—"]
    for _ in range(170):
        s = ""
        for _ in range(rng.randint(2, 10)):
            s += rng.choice(WS) * rng.randint(1, 3) + rng.choice(words)
        if rng.random() < 0.4:
            s += rng.choice(WS) * rng.randint(1, 4)
        out.append(s)
    return out


EMOJI = ["😀", "😂", "🥲", "🙂", "🤖", "🔥", "💯", "🚀", "❤️", "❤", "♥️", "✔️", "☺️", "⚡", "🎉", "🇺🇸", "🇯🇵",
         "🇫🇷", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "👍", "👍🏻", "👍🏼", "👍🏽",
         "👍🏾", "👍🏿", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨", "🏳️‍🌈", "🏳️‍⚧️", "👩🏽‍💻", "🧑🏿‍🚀", "👨🏻‍🦰",
         "🤷‍♀️", "🤷🏾‍♂️", "1️⃣", "#️⃣", "*️⃣", "©️", "®", "™️", "🫠", "🫶🏼", "🧌", "🪿", "🐦‍🔥", "🍋‍🟩",
         "🙇‍♀️", "👁️‍🗨️", "🐈‍⬛", "🧑‍🤝‍🧑", "👭🏻", "🤝🏽"]


def emoji():
    out = list(EMOJI)
    for _ in range(100):
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            parts.append(rng.choice(EMOJI) if r < 0.6 else rng.choice(["love", " it", "!", " ", "yes", "ok", "🙂🙂"]))
        out.append("".join(parts))
    return out


CJK = ["你好，世界！", "我能吞下玻璃而不伤身体。", "今天天气很好，我们去公园散步吧。", "中华人民共和国成立于1949年。",
       "機器學習與自然語言處理", "日本語のテキストです。ひらがな、カタカナ、漢字。", "吾輩は猫である。名前はまだ無い。",
       "ｶﾀｶﾅ ﾊﾝｶｸ", "東京都渋谷区", "すもももももももものうち", "한국어 텍스트입니다. 안녕하세요!",
       "대한민국의 수도는 서울입니다.", "訓民正音 ᄒᆞᆫ글", "「引用」『二重』【括弧】〔亀甲〕《書名》",
       "中文English混合text测试123", "𠀀𠀁𠀂 𪚥 𰻞𰻞麵", "〒100-0001 東京都千代田区千代田1-1", "１２３ＡＢＣａｂｃ",
       "龍龍龍龍龍", "ー〜・…‥"]


def cjk():
    out = list(CJK)
    pool = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坐集编宝谈府拉黑且随格尽剑讲布杀微怕母调局根曾准团段终乐切级克精哪官示冷域读"
    for _ in range(130):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(3, 40)))
        if rng.random() < 0.3:
            s += rng.choice(["。", "，", "！", "？", "、", " ", "\n", "abc", "123"])
        if rng.random() < 0.2:
            s = rng.choice(["あいうえお", "カキクケコ", "가나다라", "ㄱㄴㄷ"]) + s
        out.append(s)
    return out


RTL = ["مرحبا بالعالم", "اللغة العربية جميلة جداً.", "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ", "السَّلَامُ عَلَيْكُمْ",
       "١٢٣ + ٤٥٦ = ٥٧٩", "شكراً لك، أراك غداً!", "فارسی: سلام دنیا، حال شما چطور است؟", "اردو: آپ کیسے ہیں؟",
       "שלום עולם", "עִבְרִית עִם נִקּוּד", "בְּרֵאשִׁית בָּרָא אֱלֹהִים", "מה שלומך? 123 abc",
       "Hello \u202bمرحبا\u202c world", "\u200fRTL mark\u200e LTR mark", "العربية English עברית mixed",
       "ﷺ ﷽ ﻻ ﻷ", "ܫܠܡܐ (Syriac)", "ހެލޯ (Thaana)", "ߒߞߏ (NKo)", "تست\u0640\u0640\u0640کشیده"]


def rtl():
    out = list(RTL)
    ar = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
    he = "אבגדהוזחטיכלמנסעפצקרשת"
    marks = ["\u064b", "\u064e", "\u064f", "\u0650", "\u0651", "\u0652", "\u05b0", "\u05b4", "\u05bc", "\u05c1"]
    for _ in range(120):
        base = ar if rng.random() < 0.6 else he
        words = []
        for _ in range(rng.randint(1, 8)):
            w = ""
            for _ in range(rng.randint(1, 7)):
                w += rng.choice(base)
                if rng.random() < 0.25:
                    w += rng.choice(marks)
            words.append(w)
        s = " ".join(words)
        if rng.random() < 0.3:
            s += rng.choice(["؟", "،", ".", " 42", " abc", "\n"])
        out.append(s)
    return out


INDIC = ["नमस्ते दुनिया", "हिन्दी भाषा बहुत सुंदर है।", "संस्कृतम् जगतः एकतमा अतिप्राचीना भाषा।", "क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़",
         "क्ष त्र ज्ञ श्र", "ॐ नमः शिवाय", "தமிழ் மொழி", "வணக்கம் உலகம்!", "கொ கோ கௌ", "বাংলা ভাষা",
         "আমি বাংলায় গান গাই।", "ক্ষ জ্ঞ", "తెలుగు భాష", "ಕನ್ನಡ ಭಾಷೆ", "മലയാളം ഭാഷ", "ગુજરાતી ભાષા",
         "ਪੰਜਾਬੀ ਭਾਸ਼ਾ", "ଓଡ଼ିଆ ଭାଷା", "සිංහල භාෂාව", "ภาษาไทย สวัสดีครับ", "ພາສາລາວ", "ភាសាខ្មែរ", "မြန်မာဘာသာ",
         "र्‍ य (ZWJ)", "क्‌ष (ZWNJ)"]


def indic():
    out = list(INDIC)
    scripts = [(0x0915, 0x0939, 0x093E, 0x094C, "\u094d"), (0x0B95, 0x0BB9, 0x0BBE, 0x0BCC, "\u0bcd"),
               (0x0995, 0x09B9, 0x09BE, 0x09CC, "\u09cd"), (0x0C15, 0x0C39, 0x0C3E, 0x0C4C, "\u0c4d"),
               (0x0D15, 0x0D39, 0x0D3E, 0x0D4C, "\u0d4d")]
    for _ in range(155):
        c0, c1, v0, v1, virama = rng.choice(scripts)
        words = []
        for _ in range(rng.randint(1, 7)):
            w = ""
            for _ in range(rng.randint(1, 5)):
                c = chr(rng.randint(c0, c1))
                if unicodedata.category(c) != "Lo":
                    continue
                w += c
                r = rng.random()
                if r < 0.4:
                    v = chr(rng.randint(v0, v1))
                    if unicodedata.category(v) in ("Mn", "Mc"):
                        w += v
                elif r < 0.55:
                    w += virama
            words.append(w)
        s = " ".join(words)
        if rng.random() < 0.3:
            s += rng.choice(["।", "॥", ".", " 2024", "\n", "!"])
        out.append(s)
    return out


def nfd():
    base = ["café", "naïve", "résumé", "Ångström", "Ñandú", "Tiếng Việt có dấu", "Zürich", "São Paulo", "Øre",
            "crème brûlée", "piñata", "Dvořák", "Łódź", "Ελληνικά ΐ ΰ", "Ὀδυσσεύς", "Ḱṓṡṁé", "한국어 텍스트",
            "ガギグゲゴ パピプペポ", "ﬁ ﬂ ﬀ", "Å Ω K", "ǅ ǈ ǋ", "ḍ̇ q̣̇", "é̩", "ṩ", "Ǻ ǻ ǽ", "ǖ ǘ ǚ ǜ"]
    out = []
    for s in base:
        out.append(unicodedata.normalize("NFD", s))
        out.append(unicodedata.normalize("NFKD", s))
    out += ["e\u0301", "e\u0301\u0301", "a\u0323\u0302", "a\u0302\u0323", "\u0301", "\u0301abc", "x\u0345\u0301",
            "\u1100\u1161\u11a8", "\u1100\u1161", "\u110b\u1167\u11ab", "\u212b", "\u2126", "\u212a",
            "\u00c5\u030a", "A\u030a\u0301", "o\u0308\u0304", "\u0958\u0959", "\u0915\u093c", "\u09a1\u09bc",
            "\u0b47\u0b3e", "\u0bc6\u0bbe", "\u0d46\u0d3e", "\u0cc6\u0cc2", "\u1025\u102e", "\u0627\u0653",
            "\u05d1\u05bc", "\u0f40\u0fb5", "\u0928\u093c", "\u0061\u0328\u0301", "\u0041\u030c\u0307",
            "\u03b1\u0313\u0342\u0345", "\u0399\u0308\u0301"]
    latin = "aeiouAEIOUcnsyzgkrl"
    marks = [chr(c) for c in range(0x0300, 0x0370)]
    for _ in range(60):
        s = ""
        for _ in range(rng.randint(3, 15)):
            s += rng.choice(latin)
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                s += rng.choice(marks)
            if rng.random() < 0.15:
                s += " "
        out.append(s)
    return out


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
            "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
            "</tool_response>", "<think>", "</think>"]


def specials(verses):
    out = list(SPECIALS)
    out += ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\n",
            "<|im_start|>assistant\n<think>\nLet me think.\n</think>\n\nThe answer is 42.<|im_end|>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c<|fim_middle|>",
            "<|endoftext|><|endoftext|><|endoftext|>", "<|im_start|><|im_end|>", "<<|im_end|>>",
            "<|im_start", "|im_start|>", "<|im_start|", "<|IM_START|>", "< |im_start|>", "<|im_start |>",
            "text<|endoftext|>text", " <|endoftext|> ", "\n<|im_end|>\n", "<think></think>", "<think>\n\n</think>",
            "<|endoftext|>" * 10, "a<|im_start|>b<|im_end|>c", "🙂<|im_end|>🙂", "中<|im_start|>文",
            "<|im_start|>\u0301", "e<|im_end|>\u0301", "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>",
            "<|repo_name|>kiln\n<|file_sep|>src/main.c\nint main(void) { return 0; }",
            "<tool_response>\n{\"temp\": 21}\n</tool_response>", "<tool_call><tool_call></tool_call>",
            "<|im_end|>" * 3 + " trailing", "   <|im_start|>   ", "\t<|im_end|>\t", "<|im_start|>\r\n"]
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(2, 7)):
            r = rng.random()
            if r < 0.4:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.8:
                parts.append(rng.choice(verses)[: rng.randint(1, 60)])
            else:
                parts.append(rng.choice(["\n", " ", "\n\n", "user\n", "assistant\n", "system\n", "🙂", "中文"]))
        out.append("".join(parts))
    return out


def oddities():
    out = ["\ufffd", "a\ufffdb", "\ufffd\ufffd\ufffd", "zero\u200bwidth\u200bspace", "join\u200cer\u200dner",
           "\u2060word\u2060joiner", "\ufeffBOM at start", "mid\ufeffBOM", "\u00ad soft\u00adhyphen",
           "\u0000", "a\u0000b", "\u0001\u0002\u0003\u001f\u007f", "\u0080\u0081\u009f", "\ue000\uf8ff private",
           "\U000f0000\U0010fffd", "\ufffe\uffff", "\U0001fffe", "\U0001d400\U0001d401 math bold",
           "\U0001d538\U0001d539 double-struck", "\U00010000 Linear B", "\U00012000 cuneiform",
           "\U00011f00\U00011f04\U00011f10 Kawi", "\U00031350\U00031351 CJK ext H", "\U0001d2c0\U0001d2c1 Kaktovik",
           "\U0001e030\U0001e031 Cyrillic modifier", "\u1c89\u1c8a Unicode 16", "\U00010d4a\U00010d40 Garay",
           "\U00011935\U00011930 Dives Akuru", "\U00011938", "a\u07fd\u0301", "\u0898\u0345a", "x\u1abf\u0345",
           "it'\u017f IT'\u017f", "'\u017ft \u212aelvin \u212b", "İstanbul ı ß ẞ ﬁ ﬆ ŉ", "ǅ ǲ",
           "\u0300\u0301\u0302 lone marks", "\u20dd\u20e3 enclosing", "a\u034f b", "\ufe0f\ufe0e",
           "\U000e0001\U000e0020\U000e007f tags", "\U000e0100 variation selector supplement",
           "\u2066isolate\u2069 \u202eoverride\u202c", "\u3164 hangul filler", "\u115f\u1160 jamo fillers",
           "ｈｅｌｌｏ　ｗｏｒｌｄ", "℃ ℉ № ™ ℠ ℡", "⅓ ⅔ ¼ ½ ¾", "ﬃ ﬄ ﬅ", "ℌℑℜℨ", "① ⑳ ㉑ ㊿", "⒜ ⒝ ⓐ Ⓐ",
           "\U0001f130\U0001f150\U0001f170 squared letters"]
    out.append("a" * 2000)
    out.append("supercalifragilisticexpialidocious" * 30)
    out.append("9" * 500)
    out.append("!" * 300)
    out.append("-=" * 200)
    out.append("中" * 400)
    out.append("🙂" * 200)
    out.append("a\u0301" * 300)
    out.append(" " * 1000 + "x")
    out.append("\n" * 300)
    out.append("ab " * 500)
    out.append("http" + "s://" * 50)
    out.append("".join(chr(c) for c in range(0x20, 0x7f)))
    out.append("".join(chr(c) for c in range(0xa0, 0x180)))
    for _ in range(180):
        n = rng.randint(1, 30)
        s = ""
        for _ in range(n):
            r = rng.random()
            if r < 0.3:
                s += chr(rng.randint(0x20, 0x7e))
            elif r < 0.5:
                s += chr(rng.randint(0xa0, 0x2fff))
            elif r < 0.65:
                s += chr(rng.randint(0x3000, 0xd7ff))
            elif r < 0.75:
                s += chr(rng.randint(0xe000, 0xffff))
            elif r < 0.85:
                s += chr(rng.randint(0x10000, 0x10ffff))
            elif r < 0.95:
                s += rng.choice(WS)
            else:
                s += rng.choice(SPECIALS)
        out.append(s)
    return out


def sweep():
    """Code points across Unicode, each in a few contexts, 12 to a line."""
    cps = list(range(0x00a0, 0x3400, 7)) + list(range(0x3400, 0xa000, 211)) + list(range(0xa000, 0xd800, 13))
    cps += list(range(0xf900, 0x10000, 5)) + list(range(0x10000, 0x20000, 97)) + list(range(0x20000, 0x32400, 1009))
    cps += list(range(0xe0000, 0xe0200, 17))
    # Every range where PCRE2/utf8proc and HF's engines disagree (see src/model/tokenizer_regex.c and
    # tokenizer_utf8.c): both ends and a middle.
    for lo, hi in [(0x1c89, 0x1c8a), (0xa7cb, 0xa7cd), (0x105c0, 0x105f3), (0x10d4a, 0x10d65), (0x11380, 0x11389),
                   (0x11bc0, 0x11be0), (0x11f04, 0x11f10), (0x13460, 0x143fa), (0x16100, 0x1611d),
                   (0x16d40, 0x16d6c), (0x1e030, 0x1e06d), (0x1e4d0, 0x1e4eb), (0x1e5d0, 0x1e5ed),
                   (0x2ebf0, 0x2ee5d), (0x31350, 0x323af), (0x10d40, 0x10d49), (0x116d0, 0x116e3),
                   (0x1ccf0, 0x1ccf9), (0x1d2c0, 0x1d2d3), (0x1e5f1, 0x1e5fa), (0x07fd, 0x07fd), (0x0898, 0x089f),
                   (0x1abf, 0x1ace), (0x10f46, 0x10f50), (0x11930, 0x11938), (0x32ff, 0x32ff), (0x107b2, 0x107ba)]:
        cps += sorted({lo, (lo + hi) // 2, hi})
    cps = [c for c in cps if not 0xd800 <= c < 0xe000]
    out = []
    for i in range(0, len(cps), 12):
        out.append(" ".join(f"{chr(c)}a{chr(c)}b {chr(c)}1 {chr(c)}{chr(c)}x" for c in cps[i:i + 12]))
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/tokenizer/corpus.jsonl"
    verses = bible_verses()
    lines = (prose(verses) + code() + numbers() + whitespace() + emoji() + cjk() + rtl() + indic() + nfd() +
             specials(verses) + oddities() + sweep())
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    print(f"{path}: {len(lines)} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
