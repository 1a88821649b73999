"""The `eval` stage: perplexity per language, answers to a prompts file, code-switch rate; report.json/.md."""

from __future__ import annotations

# torch (through factory.posttrain.evaluate) is imported inside run: the registry imports this module at start-up.
import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterator

from factory.config_base import CoreConfig
from factory.data.config import LangMixConfig
from factory.data.langmix import LangMixDetector
from factory.errors import ConfigError
from factory.io import atomic_write_json, atomic_write_text
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain.config import EvalConfig
from factory.stage_api import Plan, SectionSpec, Stage
from tokenizer.config import SpecialTokens

log = logging.getLogger(__name__)


def is_megatron(path: Path) -> bool:
    """A Megatron checkpoint root or one iter_NNNNNNN folder (exported to HF before evaluation)."""
    return (path / "latest_checkpointed_iteration.txt").is_file() or path.name.startswith("iter_")


def plan(cfg: CoreConfig) -> Plan:
    ec = STAGE.section_of(cfg)
    model = ec.model or cfg.stage_dir("dpo") / "hf"
    out = ec.output_dir or cfg.stage_dir("eval")
    reads = [model] + [h.path for h in ec.heldout] + ([ec.prompts] if ec.prompts else [])
    notes = []
    if model.exists() and is_megatron(model):
        reads.append(ec.tokenizer_dir or cfg.stage_dir("tokenizer"))
        notes.append("Megatron checkpoint: exported to a temporary HF folder (verified by logits) first")
    missing = [f"eval: input not found: {p}" for p in reads if not p.exists()]
    if missing:
        raise ConfigError(missing)
    if not is_megatron(model):
        hf.check_causal_lm(model)
    return Plan(output_dir=out, reads=reads, notes=notes,
                writes=[out / "report.json", out / "report.md"] + ([out / "generations.jsonl"] if ec.prompts else []))


@contextlib.contextmanager
def hf_folder(cfg: CoreConfig, model: Path) -> Iterator[Path]:
    """The model as an HF folder: itself, or a temporary export of a Megatron checkpoint."""
    if not is_megatron(model):
        yield model
        return
    from factory.convert.export import export_checkpoint

    tokenizer = cfg.eval.tokenizer_dir or cfg.stage_dir("tokenizer")
    with tempfile.TemporaryDirectory(prefix="eval-export-") as tmp:
        export_checkpoint(model, Path(tmp) / "hf", runtime=cfg.runtime, tokenizer_dir=tokenizer,
                          run_dir=cfg.run.dir, name=cfg.run.name)
        yield Path(tmp) / "hf"


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    from factory.posttrain import evaluate as ev

    ec = STAGE.section_of(cfg)
    model_path = plan.reads[0]
    manifest.add_input(model_path, role="model")
    with hf_folder(cfg, model_path) as folder:
        tok = hf.load_tokenizer(folder, "eval.tokenizer_dir")
        _, dtype = hf.device_and_dtype(cfg)
        model = hf.load_model(folder, dtype, len(tok)).eval()
        report = {"model": str(model_path), "perplexity": {}, "code_switch": None,
                  "commands": ev.benchmark_commands(_benchmark_target(cfg, model_path), cfg.run.name,
                                                    ec.lm_eval_tasks)}
        for h in ec.heldout:
            manifest.add_input(h.path, role=f"heldout:{h.language}")
            texts = [str(r.get(h.text_field, "")) for r in ev.read_rows(h.path, h.max_docs)]
            report["perplexity"][h.language] = ev.perplexity(model, tok, texts, ec.max_length)
            manifest.record(**{f"perplexity.{h.language}": round(report["perplexity"][h.language]["perplexity"], 4)})
        answers = []
        if ec.prompts:
            manifest.add_input(ec.prompts, role="prompts")
            answers = ev.answer(model, tok, ev.read_rows(ec.prompts), ec.max_new_tokens, _stop_ids(cfg, tok))
            cs = ev.code_switch(answers, _detector(cfg))
            report["code_switch"] = dataclasses.asdict(cs)
            manifest.record(code_switch_rate=cs.rate if cs.rate is not None else "n/a",
                            code_switch_flagged=cs.flagged, japanese_answers=cs.japanese_answers)
    _write(plan.output_dir, report, answers, manifest)
    print("# Benchmarks to run on a GPU node against the HF folder (not run here):")
    for name, command in report["commands"].items():
        print(f"# {name}\n{command}")


def _benchmark_target(cfg: CoreConfig, model: Path) -> Path:
    """The HF folder the benchmarks load: the model itself, or the export stage's output for a checkpoint."""
    if not is_megatron(model):
        return model
    return (cfg.export.output_dir if cfg.export and cfg.export.output_dir else None) or cfg.stage_dir("export") / "hf"


def _stop_ids(cfg: CoreConfig, tok) -> list[int]:
    """EOS and the chat turn end (generation stops at the end of the assistant's turn)."""
    end = (cfg.tokenizer.tokens if cfg.tokenizer else SpecialTokens()).chat_end
    ids = [tok.eos_token_id] + ([tok.convert_tokens_to_ids(end)] if end in tok.get_vocab() else [])
    return [i for i in ids if i is not None]


def _detector(cfg: CoreConfig) -> LangMixDetector:
    """The data filter's detector with the data section's thresholds (defaults without one)."""
    return LangMixDetector.from_config(cfg.data.langmix if cfg.data else LangMixConfig())


def _write(out: Path, report: dict, answers: list[dict], manifest: RunManifest) -> None:
    from factory.posttrain import evaluate as ev

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", ev.markdown(report))
    manifest.add_output(out / "report.json", role="report")
    if answers:
        atomic_write_text(out / "generations.jsonl",
                          "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
        manifest.add_output(out / "generations.jsonl", role="generations")
    ppl = ", ".join(f"{k} {v['perplexity']:.2f}" for k, v in report["perplexity"].items())
    rate = report["code_switch"]["rate"] if report["code_switch"] else None
    log.info("eval: perplexity %s; code-switch rate %s; report %s", ppl or "n/a", rate, out / "report.md")


STAGE = Stage(
    name="eval", help="perplexity, generation and code-switch rate report",
    sections=(SectionSpec("eval", EvalConfig, "Perplexity per language, generation on prompts and the code-switch "
                          "rate of an HF folder or checkpoint."),),
    plan=plan, run=run, result_sections=("runtime", "data", "eval"),
    after=("tokenizer", "pretrain", "cpt", "export", "sft", "dpo"), uses_gpu=True)
