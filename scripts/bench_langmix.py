"""Benchmark the language-mixing detector: recall and false positives per kind, and documents/s on one core.

Usage: python scripts/bench_langmix.py data/langmix/tune.jsonl [data/langmix/heldout.jsonl ...]
         [--detector rules|rules+lingua|lingua|cld2] [--module OLD_LANGMIX.py] [--show KIND]
         [--throughput data/demo/ja.txt] [--real ROOT --half tune|heldout]
The JSONL files come from scripts/langmix_eval_set.py. `--detector lingua` (lingua-language-detector's
mixed-language detection) and `--detector cld2` (pycld2's per-span vectors) measure a library alone for
comparison: a span identified as any language but Japanese flags the text.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from factory.data.filters import japanese_share
from factory.data.langmix import LangMixDetector

GOAL_RECALL, GOAL_FALSE_POSITIVES = 0.95, 0.02


def rules(module: Path | None = None) -> Callable[[str], bool]:
    """The factory's detector, or the `LangMixDetector` of another revision's langmix.py (`--module`)."""
    if module is None:
        return LangMixDetector().is_mixed
    spec = importlib.util.spec_from_file_location("langmix_baseline", module)
    baseline = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    return baseline.LangMixDetector().is_mixed


def _library(name: str, package: str):
    """Import a library measured for comparison only (not a project dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SystemExit(f"bench_langmix: `--detector` needs {package}: .venv/bin/pip install {package}") from None


def lingua() -> Callable[[str], bool]:
    Language, LanguageDetectorBuilder = (getattr(_library("lingua", "lingua-language-detector"), n)
                                         for n in ("Language", "LanguageDetectorBuilder"))

    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def is_mixed(text: str) -> bool:
        return any(r.language != Language.JAPANESE for r in detector.detect_multiple_languages_of(text))

    return is_mixed


def cld2() -> Callable[[str], bool]:
    pycld2 = _library("pycld2", "pycld2")

    def is_mixed(text: str) -> bool:
        _, _, _, vectors = pycld2.detect(text, returnVectors=True)
        return any(code not in ("ja", "un") for *_, code in vectors)

    return is_mixed


def rules_and_lingua() -> Callable[[str], bool]:
    """The rules, then lingua on each isolated lower-case Latin word they let through: a word that lingua
    gives to another language than English with confidence >= 0.9 flags the text."""
    import re

    lingua_module = _library("lingua", "lingua-language-detector")
    IsoCode639_1, Language, LanguageDetectorBuilder = (
        lingua_module.IsoCode639_1, lingua_module.Language, lingua_module.LanguageDetectorBuilder)

    codes = "en de fr es it pt nl sv da nb fi pl cs sk sl hr bs sr hu ro tr vi id ms tl sq et lv lt eu ca"
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in codes.split()]
    detector = LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()
    is_mixed = LangMixDetector().is_mixed

    def hybrid(text: str) -> bool:
        if is_mixed(text):
            return True
        for word in re.findall(r"(?<![\w./-])[a-zà-ÿ]{4,}(?![\w./(-])", text):
            confidence = detector.compute_language_confidence_values(word)[0]
            if confidence.language != Language.ENGLISH and confidence.value >= 0.9:
                return True
        return False

    return hybrid


DETECTORS = {"rules": rules, "lingua": lingua, "cld2": cld2, "rules+lingua": rules_and_lingua}


def read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def report(path: Path, records: list[dict], is_mixed: Callable[[str], bool], show: str | None) -> None:
    by_kind: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    start = time.process_time()
    for r in records:
        flagged = is_mixed(r["text"])
        by_kind[r["kind"]].append((r["mixed"], flagged))
        if show in (r["kind"], "errors") and flagged != r["mixed"]:
            print(f"  {'miss' if r['mixed'] else 'false positive'} [{r['kind']}] {r['inserted'][:60]!r}: "
                  f"{r['text'][:300]!r}")
    seconds = time.process_time() - start
    print(f"{path}: {len(records)} documents, {len(records) / seconds:,.0f} documents/s on one core")
    print(f"  {'kind':<14} {'n':>4}  {'measure':<16} {'value':>6}  goal")
    totals = {True: [0, 0], False: [0, 0]}
    for kind, pairs in by_kind.items():
        mixed = pairs[0][0]
        rate = sum(flagged for _, flagged in pairs) / len(pairs)
        totals[mixed][0] += sum(flagged for _, flagged in pairs)
        totals[mixed][1] += len(pairs)
        ok = rate >= GOAL_RECALL if mixed else rate <= GOAL_FALSE_POSITIVES
        print(f"  {kind:<14} {len(pairs):>4}  {'recall' if mixed else 'false positives':<16} {rate:>6.1%}  "
              f"{'ok' if ok else 'MISSED'}")
    for mixed, (hits, n) in totals.items():
        if n:
            ok = hits / n >= GOAL_RECALL if mixed else hits / n <= GOAL_FALSE_POSITIVES
            print(f"  {'all mixed' if mixed else 'all clean':<14} {n:>4}  "
                  f"{'recall' if mixed else 'false positives':<16} {hits / n:>6.1%}  {'ok' if ok else 'MISSED'}")


def throughput(path: Path, is_mixed: Callable[[str], bool]) -> None:
    """Documents/s on one core over a plain-text corpus, one document a line (the demo's `text_unit: line`),
    on the lines that reach the detector in the data stage (>= 20 characters, >= 30% Japanese)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if len(line.strip()) >= 20 and japanese_share(line) >= 0.3]
    start = time.process_time()
    flagged = sum(is_mixed(line) for line in lines)
    seconds = time.process_time() - start
    print(f"{path}: {len(lines)} lines, {flagged} flagged ({flagged / len(lines):.2%}), "
          f"{len(lines) / seconds:,.0f} documents/s on one core")


def real_paragraphs(root: Path, half: str, is_mixed: Callable[[str], bool]) -> None:
    """False positives on every real paragraph of one half's documentation (no splice): the `clean` and
    `technical` kinds' whole pools, not a sample of 100."""
    sys.path.insert(0, str(Path(__file__).parent))
    from langmix_eval_set import LATIN_TOKEN, load
    from langmix_halves import HALVES

    paragraphs = [text for _, text in load(root, HALVES[half]).paragraphs]
    for kind, pool in (("clean", [t for t in paragraphs if len(LATIN_TOKEN.findall(t)) <= 4]),
                       ("technical", [t for t in paragraphs if len(LATIN_TOKEN.findall(t)) >= 5])):
        flagged = sum(is_mixed(text) for text in pool)
        print(f"{half} real {kind} paragraphs: {flagged} of {len(pool)} flagged ({flagged / len(pool):.2%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", type=Path, nargs="*", help="JSONL files of scripts/langmix_eval_set.py")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="rules")
    parser.add_argument("--throughput", type=Path, help="a plain-text corpus, one document a line")
    parser.add_argument("--show", help="print the errors of one kind (or `errors` for all)")
    parser.add_argument("--module", type=Path, help="with `rules`: a langmix.py of another revision")
    parser.add_argument("--real", type=Path, metavar="ROOT", help="unpacked packages: false positives on every "
                        "real paragraph of --half")
    parser.add_argument("--half", default="heldout", help="with --real: tune or heldout")
    args = parser.parse_args()
    start = time.perf_counter()
    is_mixed = rules(args.module) if args.detector == "rules" else DETECTORS[args.detector]()
    is_mixed("読み込み")
    print(f"{args.detector}: ready in {time.perf_counter() - start:.1f} s")
    for path in args.sets:
        report(path, read(path), is_mixed, args.show)
    if args.throughput:
        throughput(args.throughput, is_mixed)
    if args.real:
        real_paragraphs(args.real, args.half, is_mixed)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
