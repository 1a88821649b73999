"""The `eval` stage: perplexity per language, answers to a prompts file, code-switch rate, JGLUE through
lm-evaluation-harness's own leaderboard tasks and under the llm-jp-eval protocol, Japanese MT-Bench and
checkpoints by iteration (benchmarks.py); report.json/.md."""

from __future__ import annotations

# The benchmarks and measurements (torch, lm-eval) are imported inside plan/run: the registry imports this
# module at every start-up.
import dataclasses
import json
import logging
from pathlib import Path

from factory import outputs
from factory.config_base import CoreConfig
from factory.data.config import LangMixConfig
from factory.data.langmix import LangMixDetector
from factory.errors import ConfigError, missing_inputs
from factory.hf import tokenizer_files
from factory.identity import is_megatron_checkpoint as is_megatron
from factory.io import atomic_write_json, atomic_write_text
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain.checkpoint_eval import hf_folder
from factory.posttrain.config import EvalConfig
from factory.stage_api import Plan, SectionSpec, Stage

log = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class EvalPlan(Plan):
    model: Path
    """An HF folder or a Megatron checkpoint (exported first)."""
    tokenizer_dir: Path
    """What a Megatron checkpoint is exported with."""


def plan(cfg: CoreConfig) -> EvalPlan:
    """Every input checked before anything is scored: the model, the held-out text and prompts, the tokenizer
    the Megatron checkpoints need (eval.model or eval.checkpoints), and every benchmark file, parsed."""
    from factory.posttrain import benchmarks

    eval_config = STAGE.section_of(cfg)
    model = eval_config.model or outputs.dpo(cfg).dir
    out = outputs.evaluation(cfg).dir
    reads = [model] + [h.path for h in eval_config.heldout] + ([eval_config.prompts] if eval_config.prompts else [])
    checkpoint = model.exists() and is_megatron(model)
    tokenizer = eval_config.tokenizer_dir or outputs.tokenizer(cfg).dir
    if checkpoint or eval_config.checkpoints:
        reads.append(tokenizer)
    missing = missing_inputs("eval", reads)
    if missing:  # before the benchmarks' inputs: the model is what a user names first
        raise ConfigError(missing)
    bench_reads, notes = benchmarks.plan_reads(eval_config)
    if checkpoint or eval_config.checkpoints:
        _check_tokenizer(tokenizer)
    if checkpoint:
        notes.append("Megatron checkpoint: exported to a temporary HF folder (verified by logits) first")
    else:
        hf.check_causal_lm(model)
    if eval_config.mt_bench:  # the answers need the chat template of the folder they are generated with
        hf.load_tokenizer(tokenizer if checkpoint else model, "eval.tokenizer_dir" if checkpoint else "eval.model")
    return EvalPlan(output_dir=out, reads=reads + bench_reads, notes=notes, model=model, tokenizer_dir=tokenizer,
                writes=[out / "report.json",
                        out / "report.md"] + ([out / "generations.jsonl"] if eval_config.prompts else [])
                + ([out / benchmarks.ANSWERS, out / benchmarks.JUDGEMENTS] if eval_config.mt_bench else []))


def _check_tokenizer(folder: Path) -> None:
    """The HF tokenizer the checkpoints' exports carry loads (one line naming eval.tokenizer_dir otherwise)."""

    try:
        tokenizer_files.read(folder)
    except ConfigError as e:
        raise ConfigError(f"eval.tokenizer_dir (the tokenizer Megatron checkpoints are exported with): {e}") from None


def run(cfg: CoreConfig, plan: EvalPlan, manifest: RunManifest) -> None:
    from factory.posttrain import benchmarks

    model_path = plan.model
    manifest.add_input(model_path, role="model")
    with hf_folder(cfg, model_path) as folder:
        report, answers = _measure(cfg, folder, model_path, manifest)
        report.update(benchmarks.run(cfg, folder, model_path, manifest, plan.output_dir))
    _write(plan.output_dir, report, answers, manifest)
    print("# Hand-off commands for a GPU node against the HF folder (not run here):")
    for name, command in report["commands"].items():
        print(f"# {name}\n{command}")


def _measure(cfg: CoreConfig, folder: Path, model_path: Path, manifest: RunManifest) -> tuple[dict, list[dict]]:
    """Perplexity per language and the answers to the prompts file with their code-switch rate."""
    from factory.posttrain import evaluate as ev

    eval_config = cfg.eval
    report = {"model": str(model_path), "perplexity": {}, "code_switch": None,
              "commands": ev.benchmark_commands(_benchmark_target(cfg, model_path), cfg.run.name,
                                                eval_config.lm_eval_tasks)}
    answers: list[dict] = []
    if not eval_config.heldout and not eval_config.prompts:
        return report, answers
    prompts = ev.read_prompts(eval_config.prompts) if eval_config.prompts else []
    tok = hf.load_tokenizer(folder, "eval.tokenizer_dir")
    _, dtype = hf.device_and_dtype(cfg)
    model = hf.load_model(folder, dtype, len(tok)).eval()
    for h in eval_config.heldout:
        manifest.add_input(h.path, role=f"heldout:{h.language}")
        texts = ev.read_texts(h.path, h.text_field, h.max_docs)
        report["perplexity"][h.language] = ev.perplexity(model, tok, texts, eval_config.max_length)
        manifest.record(**{f"perplexity.{h.language}": round(report["perplexity"][h.language]["perplexity"], 4)})
    if eval_config.prompts:
        manifest.add_input(eval_config.prompts, role="prompts")
        answers = ev.answer(model, tok, prompts, eval_config.max_new_tokens, ev.stop_ids(cfg, tok))
        cs = ev.code_switch(answers, _detector(cfg))
        report["code_switch"] = dataclasses.asdict(cs)
        manifest.record(code_switch_rate=cs.rate if cs.rate is not None else "n/a",
                        code_switch_flagged=cs.flagged, japanese_answers=cs.japanese_answers)
    return report, answers


def _benchmark_target(cfg: CoreConfig, model: Path) -> Path:
    """The HF folder the benchmarks load: the model itself, or the export stage's output for a checkpoint."""
    if not is_megatron(model):
        return model
    return outputs.export(cfg).dir


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


STAGE: Stage[EvalConfig, EvalPlan] = Stage(
    name="eval", help="perplexity, code-switch rate, JGLUE (lm-evaluation-harness, llm-jp-eval), Japanese MT-Bench",
    sections=(SectionSpec("eval", EvalConfig, "Perplexity, code-switch rate, JGLUE (lm-evaluation-harness's "
                          "leaderboard tasks and the llm-jp-eval protocol) and Japanese MT-Bench of an HF folder or "
                          "Megatron checkpoints."),),
    plan=plan, run=run, outputs=outputs.evaluation, result_sections=("runtime", "data", "eval"),
    after=("tokenizer", "pretrain", "cpt", "export", "sft", "dpo"), uses_gpu=True)
