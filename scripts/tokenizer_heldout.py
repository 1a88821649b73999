"""Held-out text for tokenizer measurements: Japanese and English documentation the demo never trains on,
in two halves that share no package (stdlib only; used by scripts/fetch_tokenizer_heldout.sh).

Usage: python scripts/tokenizer_heldout.py ROOT OUT_DIR [--ja-bytes 2000000] [--en-bytes 1000000]
ROOT holds each Debian package unpacked into ROOT/NAME. Writes OUT_DIR/{tune,heldout}_{ja,en}.txt: the text
blocks of the HTML pages (paragraphs and `<pre>` lines) and man pages, one per line, deduplicated, each
language capped at a byte budget taken from the half's packages in turn. The `tune` half is the one a
change may be tuned on; `heldout` only measures.
"""

from __future__ import annotations

import argparse
import gzip
from itertools import chain, zip_longest
from pathlib import Path
from typing import Iterator

from demo_text import strip_roff
from langmix_sources import html_pages, parse_html
from tokenizer.report import language_of

# Half -> language -> packages. None of them is read by scripts/fetch_demo_text.sh (the demo's training text).
HALVES = {
    "tune": {"ja": ("gimp-help-ja", "libreoffice-help-ja", "aptitude-doc-ja", "debian-policy-ja"),
             "en": ("manpages", "debian-faq")},
    "heldout": {"ja": ("developers-reference-ja", "debian-faq-ja", "kicad-doc-ja", "debian-edu-doc-ja",
                       "manpages-ja-dev", "lilypond-doc-html-ja"),
                "en": ("developers-reference", "gimp-help-en")},
}


def package_blocks(folder: Path) -> Iterator[str]:
    """Text blocks of a package: HTML paragraphs and code lines, or the text of its man pages."""
    for page in sorted(folder.rglob("*.gz")):
        if "/man/" in str(page):
            yield from strip_roff(gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace"))
    for _, source in html_pages(folder):
        page = parse_html(source)
        yield from page.paragraphs
        yield from (line for block in page.code for line in block.splitlines())


def lines_of(root: Path, packages: tuple[str, ...], language: str) -> Iterator[str]:
    """The half's lines of one language, taken from its packages in turn."""
    streams = [(b.strip() for b in package_blocks(root / p)) for p in packages]
    seen: set[str] = set()
    for line in chain.from_iterable(zip_longest(*streams)):
        if line and line not in seen and language_of(line) == language:
            seen.add(line)
            yield line


def write_capped(lines: Iterator[str], out: Path, budget: int) -> tuple[int, int]:
    count = written = 0
    with out.open("w", encoding="utf-8") as f:
        for line in lines:
            size = len(line.encode("utf-8")) + 1
            if written + size > budget:
                break
            f.write(line + "\n")
            count, written = count + 1, written + size
    return count, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", help="folder with each package unpacked into ROOT/NAME")
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--ja-bytes", type=int, default=2_000_000)
    parser.add_argument("--en-bytes", type=int, default=1_000_000)
    parser.add_argument("--list-packages", action="store_true", help="print the Debian packages it reads")
    args = parser.parse_args()
    if args.list_packages:
        print(" ".join(p for half in HALVES.values() for packages in half.values() for p in packages))
        return
    if args.root is None or args.out is None:
        parser.error("ROOT and OUT_DIR are required")
    args.out.mkdir(parents=True, exist_ok=True)
    for half, languages in HALVES.items():
        for language, packages in languages.items():
            budget = args.ja_bytes if language == "ja" else args.en_bytes
            path = args.out / f"{half}_{language}.txt"
            count, written = write_capped(lines_of(args.root, packages, language), path, budget)
            print(f"{path}: {count:,} lines, {written:,} bytes from {', '.join(packages)}")


if __name__ == "__main__":
    main()
