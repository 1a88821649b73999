"""The eval stage's benchmarks on an HF folder: JGLUE through lm-evaluation-harness, Japanese MT-Bench with an
LLM judge, and Megatron checkpoints scored by iteration; figures into the manifest and report.json."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from factory.config_base import CoreConfig
from factory.data.synth.generate import JsonlLog
from factory.errors import ConfigError
from factory.evaldata import location as evaldata
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain import mt_bench
from factory.posttrain.checkpoint_eval import score_checkpoints, sweep_points
from factory.posttrain.config import EvalConfig
from factory.posttrain.evaluate import stop_ids
from factory.posttrain.jglue import TASKS
from factory.runtime.runtime import resolve_device

log = logging.getLogger(__name__)
ANSWERS = "mt_bench/answers.jsonl"
JUDGEMENTS = "mt_bench/judgements.jsonl"


def eval_data_dir(ec: EvalConfig) -> Path:
    """The eval data folder: eval.data_dir, else FACTORY_EVAL_DATA, else the fetched cache (one-line ConfigError
    naming all three when it is missing)."""
    return evaldata.resolve(ec.data_dir)


def plan_reads(ec: EvalConfig) -> tuple[list[Path], list[str]]:
    """(files the benchmarks read, plan notes); a missing eval data folder or checkpoint is a ConfigError."""
    if not (ec.harness or ec.mt_bench):
        return [], []
    data_dir = eval_data_dir(ec)
    reads, notes = [], [f"eval data: {data_dir}"]
    if ec.harness:
        reads += [data_dir / TASKS[t].file for t in ec.harness.tasks]
        shots = "leaderboard shots" if ec.harness.num_fewshot is None else f"{ec.harness.num_fewshot}-shot"
        notes.append(f"lm-evaluation-harness: {', '.join(ec.harness.tasks)} ({shots}, "
                     f"{f'first {ec.harness.limit}' if ec.harness.limit else 'all'} examples each)")
    if ec.mt_bench:
        reads += [data_dir / "japanese_mt_bench" / name for name in
                  ("question.jsonl", "reference_answer_gpt-4.jsonl", "judge_prompts.jsonl")]
        judge = ec.mt_bench.judge
        if judge.serve not in (None, "self"):
            reads.append(Path(judge.serve))
        if judge.api_key_env and not os.environ.get(judge.api_key_env):
            raise ConfigError(f"eval.mt_bench.judge.api_key_env={judge.api_key_env}: environment variable is not set")
        count = len(ec.mt_bench.questions) if isinstance(ec.mt_bench.questions, list) else ec.mt_bench.questions
        notes.append(f"Japanese MT-Bench: {count or 80} questions; judge "
                     + (f"{judge.serve} served on 127.0.0.1" if judge.serve else f"{judge.model} at {judge.base_url}"))
    if ec.checkpoints:
        points = sweep_points(ec.checkpoints)
        notes.append(f"checkpoints: {len(points)} iterations, each exported to a temporary HF folder and scored")
    return reads, notes


def run(cfg: CoreConfig, folder: Path, model_path: Path, manifest: RunManifest, out: Path) -> dict[str, Any]:
    """Harness tasks and MT-Bench on `folder` (the HF form of `model_path`, already a manifest input), then
    the checkpoint series; returns the report.json parts."""
    ec = cfg.eval
    report: dict[str, Any] = {}
    for path in plan_reads(ec)[0]:
        manifest.add_input(path, role="eval_data")
    if ec.harness or ec.mt_bench:
        model_key = next(i["sha256"] for i in manifest.inputs if i["role"] == "model")
        report.update(_on_model(cfg, folder, str(model_path), model_key, manifest, out))
    if ec.checkpoints:
        report["checkpoints"] = score_checkpoints(cfg, lambda f: _harness_scores(cfg, f))
        manifest.record(checkpoints_scored=len(report["checkpoints"]))
    return report


def _on_model(cfg: CoreConfig, folder: Path, model_name: str, model_key: str, manifest: RunManifest,
              out: Path) -> dict[str, Any]:
    ec, report, loaded = cfg.eval, {}, _LazyModel(cfg, folder)
    if ec.mt_bench:  # inputs first: a missing question or template fails before any work
        questions = mt_bench.load_questions(eval_data_dir(ec), ec.mt_bench.questions)
        prompts = mt_bench.load_judge_prompts(eval_data_dir(ec))
        hf.load_tokenizer(folder, "eval.mt_bench")  # the answers need the chat template
    with _judge(cfg, folder, model_name) as judge:  # a judge that is down fails before any benchmark work
        if ec.harness:
            scores = _harness_scores(cfg, folder, loaded)
            report["harness"] = [dataclasses.asdict(s) for s in scores]
            for s in scores:
                manifest.record(**_score_metrics(s))
        if ec.mt_bench:
            client, judge_model = judge
            tok, model = loaded.get()
            (out / "mt_bench").mkdir(parents=True, exist_ok=True)
            answers = mt_bench.generate_answers(model, tok, questions, ec.mt_bench, stop_ids(cfg, tok),
                                                cfg.runtime.seed, model_key,
                                                JsonlLog(out / ANSWERS, mt_bench.ANSWER_FIELDS))
            judgements = mt_bench.judge_answers(client, judge_model, questions, answers, prompts, ec.mt_bench.judge,
                                                JsonlLog(out / JUDGEMENTS, mt_bench.JUDGEMENT_FIELDS))
            report["mt_bench"] = mt_bench.summarize(judgements, judge_model)
            manifest.record(**_mt_bench_metrics(report["mt_bench"], len(questions)))
            manifest.add_output(out / ANSWERS, role="mt_bench_answers")
            manifest.add_output(out / JUDGEMENTS, role="mt_bench_judgements")
    return report


def _judge(cfg: CoreConfig, folder: Path, model_name: str):
    if cfg.eval.mt_bench is None:
        return contextlib.nullcontext(None)
    return mt_bench.judge_endpoint(cfg.eval.mt_bench.judge, folder, model_name)


class _LazyModel:
    """An HF folder's tokenizer and model on the runtime's device, loaded on first use (vLLM needs neither)."""

    def __init__(self, cfg: CoreConfig, folder: Path):
        self.cfg, self.folder, self._pair = cfg, folder, None

    def get(self):
        if self._pair is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            _, dtype = hf.device_and_dtype(self.cfg)
            model = hf.load_model(self.folder, dtype, len(tok)).eval().to(resolve_device(self.cfg.runtime))
            self._pair = tok, model
        return self._pair


def _harness_scores(cfg: CoreConfig, folder: Path, loaded: _LazyModel | None = None) -> list:
    from factory.posttrain import harness  # lm-eval is imported only when a harness section runs

    ec = cfg.eval
    backend = harness.choose_backend(ec.harness, resolve_device(cfg.runtime).type)
    _, dtype = hf.device_and_dtype(cfg)
    tok, model = (loaded or _LazyModel(cfg, folder)).get() if backend == "hf" else (None, None)
    lm = harness.make_lm(backend, folder, ec.harness, model, tok, str(dtype).removeprefix("torch."))
    scores = harness.evaluate(lm, ec.harness, eval_data_dir(ec), cfg.runtime.seed)
    for s in scores:
        log.info("eval: %s %s %s ± %s (%d examples, %d-shot; chance %s)", s.task, s.metric, _fmt(s.value),
                 _fmt(s.stderr), s.examples, s.num_fewshot, _fmt(s.chance))
    return scores


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _score_metrics(s) -> dict[str, Any]:
    """A TaskScore as flat manifest metrics."""
    base = f"{s.task}.{s.metric}"
    metrics = {base: s.value if s.value is not None else "n/a", f"{base}_stderr": s.stderr if s.stderr is not None
               else "n/a", f"{s.task}.examples": s.examples, f"{s.task}.num_fewshot": s.num_fewshot}
    if s.chance is not None:
        metrics[f"{base}_chance"] = s.chance
    if s.majority is not None:
        metrics[f"{s.task}.majority"] = s.majority
    return metrics


def _mt_bench_metrics(summary: dict[str, Any], questions: int) -> dict[str, Any]:
    def value(v):
        return "n/a" if v is None else v

    metrics = {"mt_bench.overall": value(summary["overall"]), "mt_bench.turn1": value(summary["turn1"]),
               "mt_bench.turn2": value(summary["turn2"]), "mt_bench.questions": questions,
               "mt_bench.judged": summary["judged"], "mt_bench.rated": summary["rated"],
               "mt_bench.judge_model": summary["judge_model"]}
    metrics.update({f"mt_bench.{c}": value(v) for c, v in summary["categories"].items()})
    return metrics
