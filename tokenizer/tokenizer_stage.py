"""The `tokenizer` stage: sample text, pretokenize with MeCab, train SentencePiece, export to HF, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from factory import outputs
from factory.config_base import CoreConfig
from factory.errors import ConfigError, DataError
from factory.io import atomic_dir, atomic_write_json
from factory.manifest import RunManifest
from factory.stage_api import Plan, SectionSpec, Stage
from tokenizer import hf
from tokenizer.config import UNIGRAM_GGUF, TokenizerConfig
from tokenizer.corpus import Sampler, input_bytes, input_kind, iter_lines
from tokenizer.pretokenize import PretokenizeResult, Segmenter, progress_bar, write_training_text
from tokenizer.report import evaluate, metrics, peak_rss_mib
from tokenizer.train import train

log = logging.getLogger(__name__)

MODEL_FILES = ("tokenizer.model", "tokenizer.vocab")
OUTPUTS = (*MODEL_FILES, *hf.HF_FILES, "report.json")
TRAIN_TEXT = "train.txt"
"""Pretokenized training text, written inside the temp output folder and removed before it is committed."""


def section(cfg: CoreConfig) -> TokenizerConfig:
    """The `tokenizer:` section with its inputs and dictionary checked; every problem is reported at once."""
    settings = STAGE.section_of(cfg)
    problems = _input_problems(settings.inputs)
    if settings.dictionary == "ipadic" and not _importable("ipadic"):
        problems.append("tokenizer.dictionary=ipadic: the `ipadic` package is not installed")
    if problems:
        raise ConfigError(problems)
    return settings


def _input_problems(inputs: list[Path]) -> list[str]:
    if not inputs:
        return ["tokenizer.inputs: empty; list .txt or .jsonl files (optionally .gz) or local datasets folders"]
    out = []
    for i, path in enumerate(inputs):
        if not path.exists():
            out.append(f"tokenizer.inputs[{i}]={path}: not found")
        elif input_kind(path) is None:
            out.append(f"tokenizer.inputs[{i}]={path}: unsupported; expected .txt, .jsonl, .txt.gz, .jsonl.gz "
                       f"or a datasets folder")
    return out


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def plan(cfg: CoreConfig) -> Plan:
    settings = section(cfg)
    out = outputs.tokenizer(cfg).dir
    budget = "all" if settings.sample_bytes is None else f"a ~{settings.sample_bytes:,}-byte sample"
    notes = [f"{settings.model_type}, vocab {settings.vocab_size}, "
             f"granularity {settings.granularity} ({settings.dictionary}), normalization {settings.normalization}, "
             f"{settings.num_workers} worker(s)",
             f"training text: {budget} of {input_bytes(settings.inputs):,} input bytes; "
             f"{settings.heldout_fraction:.1%} of lines held out for the report"]
    if settings.normalization == "nfkc":
        notes.append("normalization=nfkc: decode(encode(x)) == x no longer holds for full/half-width forms")
    if settings.model_type == "unigram":
        notes.append(UNIGRAM_GGUF)
    return Plan(output_dir=out, reads=list(settings.inputs), writes=[out / name for name in OUTPUTS],
                notes=notes)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    settings = section(cfg)
    if settings.normalization == "nfkc":
        log.warning("tokenizer.normalization=nfkc: exact round-trip is lost; the report counts the failures")
    if settings.model_type == "unigram":
        log.warning(UNIGRAM_GGUF)
    with atomic_dir(plan.output_dir) as tmp:
        sampler, pre = _write_training_text(settings, tmp / TRAIN_TEXT, cfg.runtime.seed)
        log.info("tokenizer: training %s, vocab %d, on %d lines (%d bytes)", settings.model_type,
                 settings.vocab_size,
                 sampler.train_lines, sampler.train_bytes)
        train_seconds = train(settings, tmp / TRAIN_TEXT, tmp / "tokenizer")
        (tmp / TRAIN_TEXT).unlink()
        log.info("tokenizer: exporting to Hugging Face and evaluating %d held-out lines", len(sampler.heldout))
        hf.export(tmp, settings.tokens)
        report = build_report(settings, tmp, sampler, pre, train_seconds)
        atomic_write_json(tmp / "report.json", report)
    for path in settings.inputs:
        manifest.add_input(path, role="text")
    for name in OUTPUTS:
        manifest.add_output(plan.output_dir / name, role="report" if name == "report.json" else "tokenizer")
    manifest.record(**metrics(report))
    _log_summary(report)


def _write_training_text(settings: TokenizerConfig, path: Path, seed: int) -> tuple[Sampler, PretokenizeResult]:
    total = input_bytes(settings.inputs)
    sampler = Sampler(settings.heldout_fraction, settings.heldout_max_bytes,
                      settings.sample_bytes, total, seed)
    lines = sampler.train_lines_of(iter_lines(settings.inputs, settings.text_field))
    with progress_bar() as bar:
        task = bar.add_task("pretokenize", total=total)
        result = write_training_text(lines, path, settings.dictionary, settings.granularity,
                                     settings.num_workers,
                                     progress=lambda: bar.update(task, completed=sampler.bytes_read))
    if sampler.lines_read == 0:
        raise DataError(f"tokenizer.inputs: no text in {', '.join(map(str, settings.inputs))}")
    if result.lines == 0:
        raise DataError(f"tokenizer.inputs: all {sampler.lines_read} lines went to the held-out split; "
                        f"add text or lower tokenizer.heldout_fraction")
    return sampler, result


def build_report(settings: TokenizerConfig, out_dir: Path, sampler: Sampler, pre: PretokenizeResult,
                 train_seconds: float) -> dict[str, Any]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    heldout = evaluate(sp, hf.load(out_dir), Segmenter(settings.dictionary, "morpheme"), sampler.heldout,
                       Segmenter(settings.dictionary, "bunsetsu"))
    return {
        "tokenizer": {"model_type": settings.model_type, "vocab_size": sp.vocab_size(),
                      "granularity": settings.granularity,
                      "dictionary": settings.dictionary, "normalization": settings.normalization,
                      "byte_fallback": settings.byte_fallback, "split_digits": settings.split_digits,
                      "character_coverage": settings.character_coverage},
        "corpus": {"inputs": [str(p) for p in settings.inputs], **sampler.summary()},
        "timing": {"pretokenize_seconds": round(pre.seconds, 3),
                   "pretokenize_chars_per_second": round(pre.chars_per_second),
                   "training_seconds": round(train_seconds, 3), **peak_rss_mib()},
        "heldout": heldout,
    }


def _log_summary(report: dict[str, Any]) -> None:
    held, timing = report["heldout"], report["timing"]
    langs = ", ".join(f"{lang} {f['chars_per_token']} chars/token" for lang, f in held["languages"].items())
    log.info("tokenizer: held-out %d lines: %s; boundary crossing %s; round-trip failures %d; "
             "HF/SP id mismatches %d; training %.1fs", held["lines"], langs or "-", held["boundary_crossing_rate"],
             held["round_trip_failures"], held["hf_sp_id_mismatches"], timing["training_seconds"])


STAGE = Stage(
    name="tokenizer", help="train a MeCab-pretokenized SentencePiece tokenizer + HF export + report",
    sections=(SectionSpec("tokenizer", TokenizerConfig, "Tokenizer training: add one with `inputs: [FILE, ...]`; "
                          "MeCab pretokenization and SentencePiece options"),),
    plan=plan, run=run, outputs=outputs.tokenizer, result_sections=("tokenizer",), job_array=True, cpus=lambda cfg: STAGE.section_of(cfg).num_workers)
