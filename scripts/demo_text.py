"""Turn unpacked Debian documentation packages into plain demo text: ja.txt and en.txt (stdlib only).

Used by scripts/fetch_demo_text.sh. Japanese comes from debian-reference-ja and maint-guide-ja (plain
text) and manpages-ja (roff, stripped); English from the reStructuredText sources in python3.11-doc.
Each output is capped at a byte budget, taking sources in a fixed order so the text is reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path
from typing import Iterable, Iterator

JA_DOCS = ("usr/share/debian-reference/debian-reference.ja.txt.gz",
           "usr/share/doc/maint-guide-ja/maint-guide.ja.txt.gz")
JA_MAN = "usr/share/man/ja"
EN_RST = "usr/share/doc/python3.11/html/_sources"
EN_SECTIONS = ("tutorial", "howto", "faq", "reference", "library")

_JA = r"\u3041-\u30ff\u3400-\u9fff\uff66-\uff9f、"
_WRAP_END = re.compile(f"[{_JA}]$")
_WRAP_START = re.compile(f"^\\s*[{_JA}]")
_FONT = re.compile(r"\\f(\(..|\[[^]]*\]|.)")
_SIZE = re.compile(r"\\s[+-]?\d")
_NAMED = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "bu": "•", "co": "©",
          "oq": "‘", "cq": "’", "mu": "×", "ti": "~", "ha": "^", "rs": "\\"}
_NAMED_RE = re.compile(r"\\\((..)|\\\[([a-z]{2})\]")
_TEXT_MACROS = {"SH", "SS", "B", "I", "SM", "SB", "IP", "TP"}
_ALT_MACROS = {"BR", "RB", "IR", "RI", "BI", "IB"}


def read_text(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def unwrap_japanese(lines: Iterable[str]) -> Iterator[str]:
    """Join hard-wrapped Japanese lines: a wrap inside a word would mislead the morphological analyzer."""
    held = None
    for line in lines:
        if held is not None and _WRAP_END.search(held) and _WRAP_START.match(line):
            held += line.lstrip()
            continue
        if held is not None:
            yield held
        held = line
    if held is not None:
        yield held


def _unescape(text: str) -> str:
    text = _FONT.sub("", text)
    text = _SIZE.sub("", text)
    text = _NAMED_RE.sub(lambda m: _NAMED.get(m.group(1) or m.group(2), ""), text)
    for esc, repl in (("\\-", "-"), ("\\e", "\\"), ("\\&", ""), ("\\ ", " "), ("\\~", " "), ("\\|", ""),
                      ("\\^", ""), ("\\c", ""), ("\\/", ""), ("\\,", "")):
        text = text.replace(esc, repl)
    return text


def _macro_text(line: str) -> str:
    name, _, args = line[1:].strip().partition(" ")
    words = [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', args)]
    if name in _ALT_MACROS:
        return "".join(words)
    return " ".join(words) if name in _TEXT_MACROS else ""


def strip_roff(source: str) -> Iterator[str]:
    """Text of a man page: requests dropped, macro arguments kept, escapes resolved; tables skipped."""
    skip_until = None
    for line in source.splitlines():
        if skip_until is not None:
            if line.startswith(skip_until):
                skip_until = None
            continue
        if line.startswith((".de", ".TS")):
            skip_until = ".." if line.startswith(".de") else ".TE"
        elif line.startswith((".", "'")):
            text = _macro_text(line)
            if text:
                yield _unescape(text)
        else:
            yield _unescape(line)


def japanese_lines(root: Path) -> Iterator[str]:
    for doc in JA_DOCS:
        yield from read_text(root / doc).splitlines()
    for page in sorted((root / JA_MAN).glob("man*/*.gz")):
        yield from strip_roff(read_text(page))


def english_lines(root: Path) -> Iterator[str]:
    for section in EN_SECTIONS:
        for page in sorted((root / EN_RST / section).rglob("*.rst.txt")):
            yield from read_text(page).splitlines()


def write_capped(lines: Iterable[str], out: Path, budget: int) -> int:
    """Write lines that contain a letter (drops blank lines and ASCII-art rulers) until `budget` bytes."""
    written = 0
    with out.open("w", encoding="utf-8") as f:
        for line in lines:
            line = line.rstrip()
            if not any(c.isalpha() for c in line):
                continue
            size = len(line.encode("utf-8")) + 1
            if written + size > budget:
                break
            f.write(line + "\n")
            written += size
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder the .deb packages were unpacked into")
    parser.add_argument("out", type=Path, help="folder for ja.txt and en.txt")
    parser.add_argument("--ja-bytes", type=int, default=3_000_000)
    parser.add_argument("--en-bytes", type=int, default=1_500_000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ja = write_capped(unwrap_japanese(japanese_lines(args.root)), args.out / "ja.txt.tmp", args.ja_bytes)
    en = write_capped(english_lines(args.root), args.out / "en.txt.tmp", args.en_bytes)
    for name in ("ja.txt", "en.txt"):
        (args.out / f"{name}.tmp").replace(args.out / name)
    print(f"wrote {args.out / 'ja.txt'} ({ja:,} bytes) and {args.out / 'en.txt'} ({en:,} bytes)")


if __name__ == "__main__":
    main()
