"""Raw material of the language-mixing evaluation set, read from unpacked Debian packages (stdlib only).

Japanese paragraphs, code blocks and links come from HTML documentation; foreign words from spelling
dictionaries (hunspell `.dic`, `/usr/share/dict` lists); foreign sentences from fortune files.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

_BLOCKS = {"p", "li", "dd", "dt", "td", "th", "h1", "h2", "h3", "h4", "div", "blockquote", "caption"}
_SKIP = {"script", "style", "head", "title"}
_JA = r"\u3001-\u30ff\u3400-\u9fff\uff01-\uff5e"
_WRAP = re.compile(f"(?<=[{_JA}])\\s*\\n\\s*(?=[{_JA}])")
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


@dataclass
class Page:
    """What one HTML page gives: text blocks in order, `<pre>` blocks and absolute links."""

    paragraphs: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._text: list[str] = []
        self._pre: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "pre":
            self._flush()
            self._pre = []
        elif tag in _BLOCKS or tag == "br":
            self._flush()
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://")):
                self.page.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre" and self._pre is not None:
            block = "".join(self._pre).strip("\n")
            if block.strip():
                self.page.code.append(block)
            self._pre = None
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        (self._pre if self._pre is not None else self._text).append(data)

    def _flush(self) -> None:
        if not self._text:  # no text since the last block boundary: the common case
            return
        text = _WRAP.sub("", "".join(self._text))
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            self.page.paragraphs.append(text)
        self._text = []


def parse_html(source: str) -> Page:
    parser = _PageParser()
    parser.feed(source)
    parser.close()
    parser._flush()
    return parser.page


def html_pages(root: Path) -> Iterator[tuple[str, str]]:
    """(name, HTML source) of every page under `root`, including pages inside `.jar` help archives."""
    for path in sorted(root.rglob("*")):
        if path.suffix in (".html", ".htm") and path.is_file():
            yield str(path.relative_to(root)), path.read_bytes().decode("utf-8", errors="replace")
        elif path.suffix == ".jar":
            with zipfile.ZipFile(path) as jar:
                for name in sorted(n for n in jar.namelist() if n.endswith(".html")):
                    yield f"{path.name}!{name}", jar.read(name).decode("utf-8", errors="replace")


def japanese_share(text: str) -> float:
    letters = sum(c.isalpha() for c in text)
    return len(_JAPANESE.findall(text)) / letters if letters else 0.0


@functools.cache  # both halves of the evaluation set read most of the same lists (Polish: 3 million words)
def dictionary_words(path: Path, max_lines: int | None = None) -> tuple[str, ...]:
    """Words of a hunspell `.dic` (flags dropped, encoding from the `.aff`) or of a one-word-a-line list; with
    `max_lines`, of at most that many lines spread evenly over the list (its start alone may be all capitals)."""
    encoding = "utf-8"
    aff = path.with_suffix(".aff")
    if path.suffix == ".dic" and aff.exists():
        match = re.search(rb"^SET\s+(\S+)", aff.read_bytes(), re.M)
        encoding = match.group(1).decode() if match else "utf-8"
    lines = path.read_bytes().decode(encoding, errors="replace").splitlines()
    if path.suffix == ".dic" and lines and lines[0].strip().isdigit():
        lines = lines[1:]
    if max_lines:
        lines = lines[::-(-len(lines) // max_lines)]
    words = (line.split("/")[0].split("\t")[0].strip() for line in lines)
    # Deduplicated in file order (a dict keeps it, a set would scramble it): the lists are nearly sorted
    # already, so sorting finds long runs instead of comparing millions of strings scattered in memory.
    unique = dict.fromkeys(w for w in words if 2 <= len(w) <= 14 and not w.isupper() and _is_word(w))
    return tuple(sorted(unique))


def _is_word(word: str) -> bool:
    """Letters and combining marks only (Thai and Devanagari vowel signs are marks)."""
    if word.isalpha():  # nearly every word: one C call instead of a Python call per character
        return True
    return word[0].isalpha() and all(c.isalpha() or unicodedata.category(c).startswith("M") for c in word)


def fortune_sentences(path: Path) -> list[str]:
    """Plain sentences of a fortune file: one per cookie, attributions, markup and colour codes dropped."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    out = []
    for cookie in text.split("\n%\n"):
        lines = [line.strip() for line in cookie.splitlines() if line.strip() and not line.strip().startswith("--")]
        sentence = re.split(r"(?<=[.!?。！？])\s", " ".join(lines))[0].strip()
        if 3 <= len(sentence.split()) <= 40 and not re.search(r"[<>{}|_=*#@\\]", sentence):
            out.append(sentence)
    return out


def han_runs(path: Path) -> list[str]:
    """Runs of Han characters in a Chinese text file (the source of simplified-Chinese words)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return re.findall(r"[\u4e00-\u9fff]{2,}", text)
