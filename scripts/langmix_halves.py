"""The two halves of the language-mixing evaluation set: disjoint sources, languages, words and templates.

The tuning half is the one a detector may be tuned on; the held-out half only measures. Their Japanese
paragraphs come from different documentation packages, and every word list is split by a hash of the word,
so a word that one half uses never appears in the other; most languages and all templates differ too.
"""

from __future__ import annotations

from dataclasses import dataclass

DICT = "usr/share/dict/"
HUNSPELL = "usr/share/hunspell/"
FORTUNES = "usr/share/games/fortunes/"

# Word lists: language -> (script, file under the unpacked root).
WORD_LISTS = {
    "en": ("latin", DICT + "american-english"), "pl": ("latin", DICT + "polish"),
    "de": ("latin", DICT + "ngerman"), "fr": ("latin", DICT + "french"), "es": ("latin", DICT + "spanish"),
    "it": ("latin", DICT + "italian"), "pt": ("latin", DICT + "brazilian"), "sv": ("latin", DICT + "swedish"),
    "tr": ("latin", HUNSPELL + "tr_TR.dic"), "cs": ("latin", HUNSPELL + "cs_CZ.dic"),
    "nl": ("latin", HUNSPELL + "nl.dic"), "hu": ("latin", HUNSPELL + "hu_HU.dic"),
    "vi": ("latin", HUNSPELL + "vi_VN.dic"), "id": ("latin", HUNSPELL + "id_ID.dic"),
    "sr-latn": ("latin", HUNSPELL + "sr_Latn_RS.dic"),
    "ru": ("cyrillic", HUNSPELL + "ru_RU.dic"), "uk": ("cyrillic", DICT + "ukrainian"),
    "bg": ("cyrillic", DICT + "bulgarian"), "sr": ("cyrillic", HUNSPELL + "sr_RS.dic"),
    "el": ("greek", HUNSPELL + "el_GR.dic"), "ko": ("hangul", HUNSPELL + "ko.dic"),
    "th": ("thai", HUNSPELL + "th_TH.dic"), "ar": ("arabic", HUNSPELL + "ar.dic"),
    "he": ("hebrew", HUNSPELL + "he_IL.dic"), "hi": ("devanagari", HUNSPELL + "hi_IN.dic"),
    "zh": ("han", FORTUNES + "chinese.u8"),
}
CHINESE_TEXTS = (FORTUNES + "chinese.u8", FORTUNES + "tang300.u8", FORTUNES + "song100.u8")

# Debian packages: Japanese documentation per half, then the shared word and sentence sources.
WORD_PACKAGES = (
    "wamerican", "wpolish", "wngerman", "wfrench", "wspanish", "witalian", "wbrazilian", "wswedish",
    "wukrainian", "wbulgarian", "hunspell-tr", "hunspell-cs", "hunspell-ru", "hunspell-el", "hunspell-ko",
    "hunspell-th", "hunspell-ar", "hunspell-he", "hunspell-hi", "hunspell-nl", "hunspell-hu", "hunspell-vi",
    "hunspell-id", "hunspell-sr", "fortunes-zh", "fortunes-min", "fortunes", "fortunes-de", "fortunes-pl",
    "fortunes-ru", "fortunes-es", "fortunes-it", "fortunes-br", "fortunes-bg", "fortunes-cs",
)


@dataclass(frozen=True)
class Half:
    """Where one half draws its paragraphs, foreign words and legitimate-foreign templates from."""

    name: str
    index: int
    """Words whose hash is this modulo 2 belong to this half."""
    docs: tuple[str, ...]
    latin: tuple[str, ...]
    """Languages of the Latin single-word splices and salads."""
    scripts: dict[str, tuple[str, ...]]
    """Non-Latin script -> languages of its words."""
    sentences: dict[str, tuple[str, ...]]
    """Language -> fortune files (under FORTUNES) of real foreign sentences."""
    names: tuple[str, ...]
    """Languages whose capitalized words with diacritics serve as personal and place names."""
    name_templates: tuple[str, ...]
    greek: str
    math_templates: tuple[str, ...]
    gloss_templates: tuple[str, ...]
    url_templates: tuple[str, ...]
    inside: tuple[str, ...]
    """Where a single foreign word goes inside a Japanese word: inside `kana` morphemes, between two nouns of
    a `compound` one of which is katakana, or inside `kanji` morphemes and between any two nouns."""
    boundary: str
    """Where salads and fragments go: `before_particle` or `after_particle`."""
    pad: tuple[str, ...]
    """Spaces placed around a spliced salad."""
    pages: int | None = None
    """When set, only the documentation pages whose name hashes to this modulo 2 (two halves of the same
    packages: scripts/langmix_unseen.py)."""


SHISA = ("el", "tr", "pl", "cs", "ko", "en")  # the languages of the Shisa V2 rejected sample

TUNE = Half(
    name="tune", index=0,
    docs=("gimp-help-ja", "libreoffice-help-ja", "aptitude-doc-ja", "debian-policy-ja"),
    latin=("en", "de", "fr", "pl", "tr", "cs"),
    scripts={"cyrillic": ("ru",), "greek": ("el",), "hangul": ("ko",), "han": ("zh",), "thai": ("th",),
             "arabic": ("ar",), "hebrew": ("he",)},
    sentences={"en": ("riddles", "literature"), "de": ("de/",), "pl": ("pl/",), "ru": ("ru/",)},
    names=("pl", "cs", "tr", "de", "fr"),
    name_templates=("{name}の", "{name}は", "{name}による", "{name}（{year}年）の"),
    greek="αβγδθλμπσωΔΣ",
    math_templates=("係数{g}を", "{g}の値が", "{g} = 0.5 のとき、", "{g}軸の", "{n} μm の", "角度{g}と{h}の"),
    gloss_templates=("（{word}）", "（英: {word}）", "（独: {word}）", "（ロシア語: {word}）", "（{word}、{word2}）"),
    url_templates=("{url} を参照してください。", "詳細は {url} にあります。"),
    inside=("kana", "compound"), boundary="before_particle", pad=("", " "),
)

HELDOUT = Half(
    name="heldout", index=1,
    docs=("lilypond-doc-html-ja", "kicad-doc-ja", "developers-reference-ja", "debian-faq-ja",
          "debian-edu-doc-ja", "scilab-doc-ja"),
    latin=("en", "es", "it", "pt", "sv", "nl", "hu", "vi", "id", "sr-latn"),
    scripts={"cyrillic": ("uk", "bg", "sr"), "greek": ("el",), "hangul": ("ko",), "han": ("zh",),
             "thai": ("th",), "arabic": ("ar",), "devanagari": ("hi",)},
    sentences={"en": ("wisdom", "people", "science"), "es": ("es/",), "it": ("italia", "definizioni"),
               "pt": ("brasil",), "bg": ("bg/",), "cs": ("cs/",)},
    names=("es", "it", "pt", "sv", "hu", "vi"),
    name_templates=("{name}氏の", "（{name}）", "{name}が", "{name} と {name2} の"),
    greek="εηκνρτφχψξΩΦΓΛΘ",
    math_templates=("パラメータ{g}は", "{g}^2 が", "{g}_i の", "{g}と{h}の", "Δ{g}が", "{g}線の", "{g}-{h}論法で",
                    "{n} kΩ の"),
    gloss_templates=("({word})", "（{word}）", "（西: {word}）", "（韓国語: {word}）", "（原語 {word}）",
                     "（{word} / {word2}）"),
    url_templates=("（{url}）", "<{url}> から入手できます。", "{url}"),
    inside=("kanji",), boundary="after_particle", pad=("", " ", "  "),
)

HALVES = {half.name: half for half in (TUNE, HELDOUT)}

# The set of scripts/langmix_unseen.py: Japanese the detector was never tuned on (the Debian installation
# guide, Debian's history, xdvik-ja's notes), split page by page; every Latin-script language of the word
# lists and every script in both halves, words split by hash as above; templates of their own.
_ALL_LATIN = tuple(lang for lang, (script, _) in WORD_LISTS.items() if script == "latin")
_ALL_SCRIPTS = {"cyrillic": ("ru", "uk", "bg"), "greek": ("el",), "hangul": ("ko",), "han": ("zh",), "thai": ("th",),
                "arabic": ("ar",), "hebrew": ("he",), "devanagari": ("hi",)}
UNSEEN_DOCS = ("installation-guide-amd64", "debian-history", "xdvik-ja")

UNSEEN_TUNE = Half(
    name="unseen_tune", index=0, docs=UNSEEN_DOCS, pages=0, latin=_ALL_LATIN, scripts=_ALL_SCRIPTS,
    sentences={"en": ("fortunes",), "de": ("de/",), "ru": ("ru/",), "es": ("es/",)},
    names=("pl", "cs", "tr", "hu", "es"),
    name_templates=("{name}さんの", "{name}と{name2}は", "作者 {name} の"),
    greek="αβγδλμπσω", math_templates=("{g} を", "{g}^2 の", "{n} μs の"),
    gloss_templates=("（{word}）", "（独語: {word}）"),
    url_templates=("{url} から",),
    inside=("kana", "kanji", "compound"), boundary="before_particle", pad=("", " "),
)

UNSEEN_HELDOUT = Half(
    name="unseen_heldout", index=1, docs=UNSEEN_DOCS, pages=1, latin=_ALL_LATIN, scripts=_ALL_SCRIPTS,
    sentences={"en": ("computers", "linux"), "it": ("italia",), "pt": ("brasil",), "pl": ("pl/",)},
    names=("de", "fr", "it", "pt", "vi", "sv"),
    name_templates=("{name}教授の", "（{name}, {year}）", "{name}によれば"),
    greek="ηθκξρτφψΩ", math_templates=("{g}が", "係数 {g} と {h}", "{n} kΩ"),
    gloss_templates=("（{word}）", " ({word})", "（伊: {word}）"),
    url_templates=("<{url}>",),
    inside=("kana", "kanji", "compound"), boundary="after_particle", pad=("", " "),
)

UNSEEN = {half.name: half for half in (UNSEEN_TUNE, UNSEEN_HELDOUT)}
