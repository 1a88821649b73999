"""Language-mixing detector: flags Japanese text with spliced spans of other scripts or languages.

Rules over Unicode script runs, Latin words and their place among Japanese words (docs/stages/data.md):

1. URLs, e-mail addresses and glosses are removed first: a parenthesis without kana, optionally labelled
   (`（Москва）`, `（英: file system）`, `（朝鮮語: 서울）`). Code is removed before the Latin rules.
2. A run of `min_foreign_run` letters of a script that Japanese never uses (Cyrillic, Hangul, Arabic,
   Thai, Devanagari, ...) flags the text; so does a Greek run of three letters or more (one or two are
   math symbols: α, Δt, Δφ), and `min_hanzi_only` Han characters that Japanese does not use
   (simplified Chinese 们 这 说 ..., or outside every Japanese character set).
3. A Latin word glued without spaces inside a Japanese word flags it (右クhelloリック, 管理hello者, and for
   lower-case words 設定helloファイル), unless it is an acronym, an identifier or a single letter; so does a
   plain lower-case word of 4+ letters glued between two Japanese words (名前patrizioを), unless it heads a
   compound noun (rulesファイル), recurs in the text or is a command, and a lower-case word with a diacritic
   touching Japanese (部分vọngが).
4. Latin spans (words between Japanese characters) score 2 per letter that only Turkish, Polish, Czech and
   their neighbours use (ş ğ ı ł ą ę ż ř ě ů ...) and 1 per other diacritic (é ö ü); Hepburn macrons
   (ō ū) count 0 and Capitalized names (Dvořák, Erdős) are not scored, nor spans in parentheses.
5. Outside code (a run of lines without Japanese, one of which looks like code), quoted strings, Title
   Case names, terms followed by their acronym or translation and titles cited before a verb of
   reference: a sentence (four words or more ending in . ! ?) reads as prose, as does a span with two
   function words of English, Turkish, Polish, Czech, German, French or Spanish, or one unambiguous
   function word ("the", "however", "jest"), and a span of `min_prose_words` plain lower-case words,
   unless it is a command or a gloss in 「」『』 brackets.
6. `min_stray_words` isolated plain lower-case words (not programming vocabulary) in one document flag it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from factory.data.config import LangMixConfig
from factory.data.langmix_words import AMBIGUOUS, COMMANDS, FUNCTION, MACRON, STRONG, TECH, TITLE_WORDS
from factory.data.word_boundaries import heads_a_compound, inside_word
from factory.writing_systems import (ANY_FOREIGN, FOREIGN_RUN, JAPANESE, JAPANESE_CHARS, JAPANESE_TEXT_CHARS, KANA_CHARS,
                                     chinese_only)

_J = JAPANESE_CHARS
_LINKS = re.compile(r"https?://[^\s（）「」、。]+|www\.[^\s（）「」、。]+|[\w.+-]+@[\w-]+\.[\w.]+")
# A parenthesis without kana, optionally labelled in Japanese: a gloss (`（Москва）`, `（英: file system）`,
# `（原語 Zeitgeist）`, `（北京、Běijīng）`). Kana inside means Japanese prose, which is checked; a parenthesis
# right after a Latin letter or digit is a call or a man page (`print('...')`, `ls(1)`).
_KANA = KANA_CHARS
_GLOSS = re.compile(f"(?<![A-Za-z0-9_.])[（(](?:[{_J}]{{1,8}}(?:\\s*[:：]\\s*|\\s+))?"
                    f"[^()（）\\n「」。{_KANA}]{{1,60}}[)）]")
_ACRONYM = re.compile(r"[（(][A-Za-z]{2,8}[)）]")
_ACRONYM_AFTER = re.compile(r"[(（][A-Za-z]{2,8}[)）]$")
_ACRONYM_NEXT = re.compile(r"\s*[（(][A-Za-z]{2,8}[)）]")
_TRANSLATION_NEXT = re.compile(f"\\s*[（(][{_J}]")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
# Segments between Japanese characters and full-width punctuation: where Latin spans live.
_SEGMENT = re.compile(f"[^{JAPANESE_TEXT_CHARS}\\n]+")
_CODE_LINE = re.compile(r"^\s*(?:[$#>]|>>>|\s{4}|\t)|[=;{}<>]|\w\(|\)\s*:")
_CODE_SPAN = re.compile(r"[;=<>{}$|\\]|\w\(")
_QUOTED = re.compile(r'^["“`\'][^"”`\']*["”`\']$')  # a quoted command or message, not a splice
_WORD = re.compile(r"^[^\W\d_]+(?:['’][^\W\d_]+)?$")
_JAPANESE_TAIL = re.compile(f"[{_J}]{{1,8}}$")
_JAPANESE_HEAD = re.compile(f"[{_J}]{{1,8}}")
_LATIN_LETTERS = "A-Za-z\u00c0-\u024f\u1e00-\u1eff"
_GLUED = re.compile(f"(?<=[{_J}])[{_LATIN_LETTERS}]+(?=[{_J}])")
# A Latin word between Japanese on one side and Japanese or its punctuation on the other (はword、 のword。).
_JP_MARK = "、。「」『』（）："
_GLUED_TO_PUNCTUATION = re.compile(f"(?<=[{_J}])[a-z]+(?=[{_JP_MARK}])|(?<=[{_JP_MARK}])[a-z]+(?=[{_J}])")
# A Latin word touching Japanese or its punctuation on at least one side (部分vọngが, 、mềm また).
_TOUCHING = re.compile(f"(?<=[{_J}{_JP_MARK}])[{_LATIN_LETTERS}]+(?![{_LATIN_LETTERS}0-9_.-])|"
                       f"(?<![{_LATIN_LETTERS}0-9_./-])[{_LATIN_LETTERS}]+(?=[{_J}{_JP_MARK}])")
_HONORIFIC = ("さん", "氏", "様", "君", "ちゃん", "先生", "教授", "博士")
_REFERENCE = re.compile(r"\s*(?:を参照|に記載|で文書化|で説明|を見て|をご覧|を読んで|の章|の節)")
_MAN_PAGE = re.compile(r"\w\(\d\w*\)")
_ALPHANUMERIC = re.compile(r"[A-Za-z]\d|\d[A-Za-z]")  # v4, x86, 2nd: identifiers and versions, not words
_EDGE = "\"'.,;:!?()[]{}“”‘’«»-–—…"


@dataclass(frozen=True)
class Finding:
    """One reason the text looks mixed: the rule and the span that triggered it."""

    rule: str
    span: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.span[:40]!r}"


@dataclass(frozen=True)
class LangMixDetector:
    """Thresholds of the heuristic; see the module docstring for the rules."""

    min_foreign_run: int = 1
    min_diacritic_score: int = 2
    min_prose_words: int = 3
    min_stray_words: int = 6
    min_hanzi_only: int = 1
    min_glued_letters: int = 4

    @classmethod
    def from_config(cls, cfg: LangMixConfig) -> LangMixDetector:
        return cls(**cfg.model_dump())

    def is_mixed(self, text: str) -> bool:
        return bool(self.findings(text))

    def findings(self, text: str) -> list[Finding]:
        """Every rule the text trips, in order; empty for clean Japanese."""
        text = _GLOSS.sub(_drop_gloss, _LINKS.sub(" ", unicodedata.normalize("NFC", text)))
        # Code is no excuse for Hangul, Greek or Polish inside Japanese text: check scripts before cutting code.
        out = self._foreign_runs(text) + self._glued_words(text)
        text = _CODE.sub("\n", text)
        stray: list[str] = []
        for line, code in _lines(text):
            for m in _SEGMENT.finditer(line):
                span = m.group().strip()
                glossed = _in_parentheses(line, m) or _is_term(line, m)
                if not code and not glossed and diacritic_score(span) >= self.min_diacritic_score:
                    out.append(Finding("diacritics", span))
                out += self._latin_span(line, m, code, stray)
        if len(set(stray)) >= self.min_stray_words:
            out.append(Finding("stray words", " ".join(sorted(set(stray)))))
        return out

    def _foreign_runs(self, text: str) -> list[Finding]:
        out = []
        for m in FOREIGN_RUN.finditer(text) if ANY_FOREIGN.search(text) else ():
            run = m.group()
            math = m.lastgroup == "Greek" and len(run) <= 2
            if len(run) >= self.min_foreign_run and not math:
                out.append(Finding(m.lastgroup, run))
        table = chinese_only()
        hanzi = [] if table.isdisjoint(text) else [c for c in text if c in table]
        if len(hanzi) >= self.min_hanzi_only:
            out.append(Finding("Chinese-only Han", "".join(hanzi)))
        return out

    def _glued_words(self, text: str) -> list[Finding]:
        out = []
        for m in _GLUED.finditer(text):
            word = m.group()
            if len(word) < 2 or _identifier(word):
                continue
            left = _JAPANESE_TAIL.search(text, 0, m.start())
            right = _JAPANESE_HEAD.match(text, m.end())
            # A name may take a suffix or lead a compound (Dvořák氏, メインWebサイト); only a cut word betrays it.
            name = word[0].isupper()
            if name and right and right.group().startswith(_HONORIFIC):
                continue
            if inside_word(left.group() if left else "", right.group() if right else "", crossing_only=name):
                out.append(Finding("inside a word", word))
            elif self._plain_glued(word, right.group() if right else "", text):
                out.append(Finding("glued word", word))
        for m in _GLUED_TO_PUNCTUATION.finditer(text):
            right = _JAPANESE_HEAD.match(text, m.end())
            if self._plain_glued(m.group(), right.group() if right else "", text):
                out.append(Finding("glued word", m.group()))
        for m in _TOUCHING.finditer(text):
            if m.group().islower() and diacritic_score(m.group()) >= 1:  # mềm, vọng: no English word has them
                out.append(Finding("glued word", m.group()))
        return out

    def _plain_glued(self, word: str, right: str, text: str) -> bool:
        """A plain lower-case word of `min_glued_letters`+ glued to Japanese: Japanese writes commands and terms
        that way mostly before the noun they name (rulesファイル, dateコマンド), rarely a word before a
        particle or a verb. Programming vocabulary, commands and words the text uses twice (its own terms:
        `debuildにより ... debuild(1)`) pass; a splice is used once."""
        return (word.islower() and len(word) >= self.min_glued_letters and word not in TECH | COMMANDS
                and len(re.findall(rf"(?<![A-Za-z]){word}(?![A-Za-z])", text)) < 2 and not heads_a_compound(right))

    def _latin_span(self, line: str, m: re.Match, code: bool, stray: list[str]) -> list[Finding]:
        span = m.group().strip()
        words = _words(span)
        if code or not words:
            return []
        if len(words) >= 4 and len(words) >= 0.6 * len(span.split()) and span[-1:] in ".!?" and \
                any(w.islower() for w in words):
            return [Finding("sentence", span)]
        if (_CODE_SPAN.search(span) or _QUOTED.match(span) or _is_title(words) or _is_term(line, m)
                or _is_reference(line, m)):
            return []
        function = [w.lower() for w in words if w.lower() in FUNCTION and not w.isupper()]
        lone = [w for w in function if len(w) >= 3 and w not in AMBIGUOUS]
        if lone or (len(function) >= 2 and len(words) >= 2):
            return [Finding("function words", span)]
        if _is_gloss(line, m) or span.split()[0] in COMMANDS:
            return []
        for part in span.split(","):  # "a, b, c" enumerates identifiers, it is not prose
            plain = [w for w in _words(part) if w.islower() and len(w) >= 2 and w not in TECH]
            if len(plain) >= self.min_prose_words:
                return [Finding("prose", span)]
            if not _enumerated(line, m):
                stray += [w for w in plain if len(w) >= 3 and w.islower()]
        return []


def _drop_gloss(m: re.Match) -> str:
    """A gloss goes; an acronym in parentheses stays, to tell `bits per pixel (bpp)` from prose."""
    return m.group() if _ACRONYM.fullmatch(m.group()) else " "


def _lines(text: str) -> list[tuple[str, bool]]:
    """(line, is code) for every line: a run of lines without Japanese is code when one of them looks like it."""
    out: list[tuple[str, bool]] = []
    block: list[str] = []

    def close_block() -> None:
        code = any(_CODE_LINE.search(b) for b in block)
        out.extend((b, code) for b in block)
        block.clear()

    for line in text.splitlines():
        if JAPANESE.search(line):
            close_block()
            out.append((line, False))
        else:
            block.append(line)
    close_block()
    return out


def _enumerated(line: str, m: re.Match) -> bool:
    """A span next to 、 ・ or a parenthesis: one item of a list, not a stray word."""
    before = line[:m.start()].rstrip()[-1:]
    after = line[m.end():].lstrip()[:1]
    return bool(before and before in "、・,，(（/") or bool(after and after in "、・,，)）/")


def _is_term(line: str, m: re.Match) -> bool:
    """A term followed by its acronym or its translation in parentheses: `bits per pixel (bpp)`,
    `Single binary package (単一バイナリーパッケージ)`."""
    span, rest = m.group().rstrip(), line[m.end():]
    return bool(_ACRONYM_AFTER.search(span) or _ACRONYM_NEXT.match(rest) or _TRANSLATION_NEXT.match(rest)
                or span.endswith("(") and JAPANESE.match(rest))


def _identifier(word: str) -> bool:
    """Acronyms and CamelCase identifiers (GPU, iPhone, PyTorch): technical names, not words of a language."""
    return word.isupper() or any(c.isupper() for c in word[1:])


def _words(span: str) -> list[str]:
    """Latin words of a span, digits trimmed; options (-x, --flag), extensions, man pages (ls(1)) and
    identifiers are not words."""
    tokens = [t.strip(_EDGE + "0123456789") for t in re.split(r"[\s,]+", span)
              if not t.startswith(("-", ".")) and not _MAN_PAGE.search(t) and not _ALPHANUMERIC.search(t)]
    return [t for t in tokens if _WORD.match(t)]


def diacritic_score(span: str) -> int:
    """2 per Turkish/Polish/Czech-only letter, 1 per other non-ASCII Latin letter, 0 for macrons.

    Capitalized and upper-case words (Dvořák, Erdős, GÖDEL) are names and score 0.
    """
    score = 0
    for word in span.split():
        if word[:1].isupper() and (word[1:].islower() or word.isupper()):
            continue
        for c in word:
            if c in STRONG:
                score += 2
            elif c.isalpha() and not c.isascii() and c not in MACRON and "LATIN" in unicodedata.name(c, ""):
                score += 1
    return score


def _is_reference(line: str, m: re.Match) -> bool:
    """A title cited as it is, before a verb of reference or inside 「」: `Control files and their fields で
    文書化`, `「The Package menu」を参照`."""
    before = line[:m.start()].rstrip()[-1:]
    return bool(_REFERENCE.match(line[m.end():])) or before in ("「", "『") and bool(_REFERENCE.match(
        line[m.end():].lstrip().lstrip("」』")))


def _in_parentheses(line: str, m: re.Match) -> bool:
    before = line[:m.start()].rstrip()[-1:]
    after = line[m.end():].lstrip()[:1]
    return (before, after) in {("（", "）"), ("(", ")")} or m.group().strip()[:1] + m.group().strip()[-1:] == "()"


def _is_gloss(line: str, m: re.Match) -> bool:
    """A span filling parentheses or 「」『』: a reading, an original-language name or a title."""
    span = m.group().strip()
    if span[:1] == "(" and span[-1:] == ")":
        return True
    before = line[:m.start()].rstrip()[-1:]
    after = line[m.end():].lstrip()[:1]
    return (before, after) in {("（", "）"), ("「", "」"), ("『", "』"), ("(", ")")}


def _is_title(words: list[str]) -> bool:
    """Title Case names and titles ("Attention Is All You Need", "Pride and Prejudice", "The Beatles")."""
    content = [w for w in words if w.lower() not in TITLE_WORDS]
    capitalized = sum(w[0].isupper() for w in words)
    return (len(words) >= 2 and bool(content) and all(w[0].isupper() for w in content)
            and capitalized >= len(words) - capitalized)
