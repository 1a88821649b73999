"""Language-mixing detector: flags Japanese text with spliced spans of other scripts or languages.

A heuristic over Unicode script runs and their context (documented in docs/stages/data.md):

1. URLs, e-mail addresses and labelled glosses such as `（英: ...）` or `（朝鮮語: ...）` are removed
   first, and code fences and inline code before the Latin rules: legitimate foreign text in Japanese.
2. Runs of a non-Latin, non-Japanese script (Greek, Cyrillic, Hangul, Arabic, Thai, ...) of at least
   `min_foreign_run` letters flag the text. One- or two-letter upper-case Greek runs (Δ, ΔΣ) are math.
3. Latin spans (words between Japanese characters) are scored for diacritics: 2 per letter that only
   Turkish, Polish, Czech and their neighbours use (ş ğ ı ł ą ę ż ř ě ů ...), 1 per other diacritic
   (é ö ü ...); Hepburn macrons (ō ū) count 0.
4. Outside code lines, quoted strings and Title Case names, a span with two function words of English,
   Turkish, Polish, Czech, German, French or Spanish, or one unambiguous function word ("the",
   "however", "jest"), reads as prose. So does a span of `min_prose_words` plain lower-case words,
   unless it is a command (`pip install ...`) or a gloss filling parentheses or 「」『』 brackets.
5. `min_stray_words` isolated plain lower-case words (not common programming vocabulary) in one
   document flag it; so do `min_hanzi_only` simplified-Chinese-only characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from factory.data.config import LangMixConfig

_FOREIGN = {
    "Greek": r"\u0370-\u03ff\u1f00-\u1fff", "Cyrillic": r"\u0400-\u052f",
    "Hangul": r"\uac00-\ud7af\u1100-\u11ff\u3130-\u318f", "Arabic": r"\u0600-\u06ff", "Hebrew": r"\u0590-\u05ff",
    "Thai": r"\u0e00-\u0e7f", "Devanagari": r"\u0900-\u097f", "Armenian": r"\u0530-\u058f",
    "Georgian": r"\u10a0-\u10ff",
}
_FOREIGN_RUN = re.compile("|".join(f"(?P<{name}>[{chars}]+)" for name, chars in _FOREIGN.items()))
_GLOSS = re.compile(r"https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.]+"
                    r"|[（(][^()（）\n]{0,12}?(?:語|英|独|仏|伊|露|希|羅|略|略称)\s*[:：][^()（）\n]*[)）]")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
# Segments between Japanese characters and full-width punctuation: where Latin spans live.
_SEGMENT = re.compile(r"[^\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef\n]+")
_CODE_LINE = re.compile(r"^\s*(?:[$#>]|>>>|\s{4}|\t)|[=;{}<>]|\w\(|\)\s*:")
_CODE_SPAN = re.compile(r"[;=<>{}$|\\]|\w\(")
_QUOTED = re.compile(r'^["“`\'][^"”`\']*["”`\']$')  # a quoted command or message, not a splice
_WORD = re.compile(r"^[^\W\d_]+(?:['’][^\W\d_]+)?$")
_EDGE = "\"'.,;:!?()[]{}“”‘’«»-–—…"
_STRONG = set("şŞğĞıİłŁąĄęĘżŻźŹśŚćĆńŃřŘěĚůŮťŤďĎňŇőŐűŰšŠčČžŽ")
_MACRON = set("āēīōūĀĒĪŌŪâêîôû")
_FUNCTION = set("""
the a an of and or to in on at for with from by as is are was were be been being it its this that these those
which who whom what when where why how not no but if then than so such can could will would should may might
must do does did has have had you he she we they me him her us them my your his our their there here very also
just only about into over after before because while although however therefore nevertheless moreover
furthermore meanwhile indeed perhaps maybe actually really something nothing everything
ve bir bu da de ile ama veya gibi daha en ne mi ki olan olarak sonra kadar ancak fakat belki
i w z na do nie to jest ze ale jak od po za przez oraz tylko jako jednak tak czy tym ten bardzo
v se je pro nebo jsou byl by ani jeho jejich velmi
der die das und ist nicht mit von zu den ein eine auch sich
le la les et est une des du que pour dans pas sur avec
el los las y es por con para una del
""".split())
# Function words that double as programming keywords, operators or one-letter variables.
_AMBIGUOUS = set("a i v w z y e to in on at as is if or no so be do by and not for with from this then "
                 "can may has new all any else case each while when where until into".split())
_TECH = set("""
list dict set tuple map array string int float bool char byte void null none true false self main print
return import class def function method var let const async await try catch except raise yield lambda
loop for while if else switch break continue range len append push pop key value index type object file
path dir log debug test build run install config json yaml http https api url html css sql git pip npm
docker app web server client token model batch layer tensor loss epoch data id ok src lib bin etc
""".split())
_COMMANDS = set("pip pip3 git npm npx apt apt-get sudo docker python python3 conda brew cargo go make cd ls "
                "curl wget ssh kubectl yarn uv mkdir rm cp mv cat echo export source".split())
_HANZI_ONLY = set("们这说个么吗还没让过样种经给认对时间发现问题关进实动开长门见东车马鸟书语钱请谢应该")


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

    min_foreign_run: int = 2
    min_diacritic_score: int = 2
    min_prose_words: int = 3
    min_stray_words: int = 4
    min_hanzi_only: int = 2

    @classmethod
    def from_config(cls, cfg: LangMixConfig) -> LangMixDetector:
        return cls(**cfg.model_dump())

    def is_mixed(self, text: str) -> bool:
        return bool(self.findings(text))

    def findings(self, text: str) -> list[Finding]:
        """Every rule the text trips, in order; empty for clean Japanese."""
        text = _GLOSS.sub("\n", unicodedata.normalize("NFC", text))
        # Code is no excuse for Hangul, Greek or Polish inside Japanese text: check scripts before cutting code.
        out = self._foreign_runs(text) + self._diacritic_spans(text)
        text = _CODE.sub("\n", text)
        stray: list[str] = []
        for line in text.splitlines():
            code = bool(_CODE_LINE.search(line)) and not _has_japanese(line)
            for m in _SEGMENT.finditer(line):
                out += self._latin_span(line, m, code, stray)
        if len(set(stray)) >= self.min_stray_words:
            out.append(Finding("stray words", " ".join(sorted(set(stray)))))
        hanzi = [c for c in text if c in _HANZI_ONLY]
        if len(hanzi) >= self.min_hanzi_only:
            out.append(Finding("simplified Chinese", "".join(hanzi)))
        return out

    def _foreign_runs(self, text: str) -> list[Finding]:
        out = []
        for m in _FOREIGN_RUN.finditer(text):
            run = m.group()
            math = m.lastgroup == "Greek" and len(run) <= 2 and run.isupper()
            if len(run) >= self.min_foreign_run and not math:
                out.append(Finding(m.lastgroup, run))
        return out

    def _diacritic_spans(self, text: str) -> list[Finding]:
        spans = (m.group().strip() for line in text.splitlines() for m in _SEGMENT.finditer(line))
        return [Finding("diacritics", s) for s in spans if diacritic_score(s) >= self.min_diacritic_score]

    def _latin_span(self, line: str, m: re.Match, code: bool, stray: list[str]) -> list[Finding]:
        span = m.group().strip()
        words = _words(span)
        if code or not words or _is_title(words) or _CODE_SPAN.search(span) or _QUOTED.match(span):
            return []
        function = [w.lower() for w in words if w.lower() in _FUNCTION and not w.isupper()]
        lone = [w for w in function if len(w) >= 3 and w not in _AMBIGUOUS]
        if lone or (len(function) >= 2 and len(words) >= 2):
            return [Finding("function words", span)]
        if _is_gloss(line, m) or span.split()[0] in _COMMANDS:
            return []
        for part in span.split(","):  # "a, b, c" enumerates identifiers, it is not prose
            plain = [w for w in _words(part) if w.islower() and len(w) >= 2 and w not in _TECH]
            if len(plain) >= self.min_prose_words:
                return [Finding("prose", span)]
            stray += [w for w in plain if len(w) >= 3]
        return []


def _words(span: str) -> list[str]:
    """Latin words of a span, digits trimmed; options (-x, --flag) and identifiers are not words."""
    tokens = [t.strip(_EDGE + "0123456789") for t in re.split(r"[\s,]+", span) if not t.startswith("-")]
    return [t for t in tokens if _WORD.match(t)]


def diacritic_score(span: str) -> int:
    """2 per Turkish/Polish/Czech-only letter, 1 per other non-ASCII Latin letter, 0 for macrons."""
    score = 0
    for c in span:
        if c in _STRONG:
            score += 2
        elif c.isalpha() and not c.isascii() and c not in _MACRON and "LATIN" in unicodedata.name(c, ""):
            score += 1
    return score


def _has_japanese(line: str) -> bool:
    return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in line)


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
    content = [w for w in words if w.lower() not in _FUNCTION]
    capitalized = sum(w[0].isupper() for w in words)
    return (len(words) >= 2 and bool(content) and all(w[0].isupper() for w in content)
            and capitalized >= len(words) - capitalized)
