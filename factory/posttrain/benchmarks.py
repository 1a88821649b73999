"""The eval stage's benchmarks on an HF folder: JGLUE through lm-evaluation-harness under two protocols, Japanese
MT-Bench with an LLM judge, and Megatron checkpoints scored by iteration; figures into the manifest and
report.json. `plan_reads` reads and checks every input they need before anything is scored."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from factory.config_base import CoreConfig
from factory.errors import ConfigError, missing_inputs
from factory.evaldata import location as evaldata
from factory.jsonl_log import JsonlLog
from factory.manifest import RunManifest
from factory.posttrain import llm_jp_eval
from factory.posttrain import model as hf
from factory.posttrain import mt_bench
from factory.posttrain.benchmark_config import LEADERBOARD
from factory.posttrain.checkpoint_eval import score_checkpoints, sweep_points
from factory.posttrain.config import EvalConfig
from factory.posttrain.evaluate import stop_ids
from factory.posttrain.jglue import TASKS
from factory.runtime.runtime import resolve_device

log = logging.getLogger(__name__)
ANSWERS = "mt_bench/answers.jsonl"
JUDGEMENTS = "mt_bench/judgements.jsonl"


def eval_data_dir(evaluation: EvalConfig) -> Path:
    """The eval data folder: eval.data_dir, else FACTORY_EVAL_DATA, else the fetched cache (one-line ConfigError
    naming all three when it is missing)."""
    return evaldata.resolve(evaluation.data_dir)


def plan_reads(evaluation: EvalConfig) -> tuple[list[Path], list[str]]:
    """(files the benchmarks read, plan notes), every one read and checked here: a missing eval data folder,
    file or checkpoint is a ConfigError, a malformed row a DataError naming file:line."""
    if not (evaluation.harness or evaluation.mt_bench):
        return [], []
    data_dir = eval_data_dir(evaluation)
    reads, notes = [], [f"eval data: {data_dir}"]
    if evaluation.harness:
        reads += _harness_reads(evaluation, data_dir, notes)
    if evaluation.mt_bench:
        reads += _mt_bench_reads(evaluation, data_dir, notes)
    if evaluation.checkpoints:
        points = sweep_points(evaluation.checkpoints)
        notes.append(f"checkpoints: {len(points)} iterations, each exported to a temporary HF folder and scored")
    return reads, notes


def _harness_reads(evaluation: EvalConfig, data_dir: Path, notes: list[str]) -> list[Path]:
    reads, shots = [], []
    for name in evaluation.harness.tasks:
        spec = TASKS[name]
        files = [data_dir / spec.file(split) for split in ("validation", "train")]
        present = [f for f in files if f.is_file()]
        _check_present(files[:1])
        for f in present:
            spec.rows(f)  # a malformed row fails here, before any scoring
        reads += present
        shots.append(f"{name} from {'train' if files[1] in present else 'validation (no train split)'}")
    count = "leaderboard defaults" if evaluation.harness.num_fewshot is None else f"{evaluation.harness.num_fewshot}"
    harness = evaluation.harness
    notes.append(f"JGLUE ({', '.join(harness.protocols)}): {', '.join(harness.tasks)}; shots ({count}): "
                 f"{', '.join(shots)}; {f'first {harness.limit}' if harness.limit else 'all'} examples each")
    if llm_jp_eval.PROTOCOL in evaluation.harness.protocols:
        left = [t for t in evaluation.harness.tasks if t not in llm_jp_eval.TASKS]
        if left:
            notes.append(f"llm-jp-eval protocol: {', '.join(left)} not scored (not reproducible from its public code)")
    return reads


def _mt_bench_reads(evaluation: EvalConfig, data_dir: Path, notes: list[str]) -> list[Path]:
    judge = evaluation.mt_bench.judge
    folder = data_dir / mt_bench.FOLDER
    reads = [folder / "question.jsonl", folder / "reference_answer_gpt-4.jsonl",
             mt_bench.judge_prompts_file(data_dir, judge)] + ([Path(judge.serve)] if judge.serve not in (None, "self")
                                                              else [])
    _check_present(reads)
    questions = mt_bench.load_questions(data_dir, evaluation.mt_bench.questions)
    mt_bench.load_judge_prompts(reads[2])
    if judge.api_key_env and not os.environ.get(judge.api_key_env):
        raise ConfigError(f"eval.mt_bench.judge.api_key_env={judge.api_key_env}: environment variable is not set")
    notes.append(f"Japanese MT-Bench: {len(questions)} questions x {evaluation.mt_bench.samples} samples; judge "
                 + (f"{judge.serve} served on 127.0.0.1" if judge.serve else f"{judge.model} at {judge.base_url}")
                 + f" with the prompts of {reads[2]}")
    return reads


def _check_present(paths: list[Path]) -> None:
    missing = missing_inputs("eval", paths)
    if missing:
        raise ConfigError(missing)


def run(cfg: CoreConfig, folder: Path, model_path: Path, manifest: RunManifest, out: Path) -> dict[str, Any]:
    """Harness tasks and MT-Bench on `folder` (the HF form of `model_path`, already a manifest input), then
    the checkpoint series; returns the report.json parts."""
    evaluation = cfg.eval
    report: dict[str, Any] = {}
    for path in plan_reads(evaluation)[0]:
        manifest.add_input(path, role="eval_data")
    if evaluation.harness or evaluation.mt_bench:
        model_key = next(i["sha256"] for i in manifest.inputs if i["role"] == "model")
        report.update(_on_model(cfg, folder, str(model_path), model_key, manifest, out))
    if evaluation.checkpoints:
        report["checkpoints"] = score_checkpoints(cfg, lambda f: _harness_scores(cfg, f))
        manifest.record(checkpoints_scored=len(report["checkpoints"]))
    return report


def _on_model(cfg: CoreConfig, folder: Path, model_name: str, model_key: str, manifest: RunManifest,
              out: Path) -> dict[str, Any]:
    evaluation, report, loaded = cfg.eval, {}, _LazyModel(cfg, folder)
    if evaluation.mt_bench:  # parsed by the plan already; here for the run
        questions = mt_bench.load_questions(eval_data_dir(evaluation), evaluation.mt_bench.questions)
        prompts_file = mt_bench.judge_prompts_file(eval_data_dir(evaluation), evaluation.mt_bench.judge)
        prompts = mt_bench.load_judge_prompts(prompts_file)
    with _judge(cfg, folder, model_name) as judge:  # a judge that is down fails before any benchmark work
        if evaluation.harness:
            scores = _harness_scores(cfg, folder, loaded)
            report["harness"] = [dataclasses.asdict(s) for s in scores]
            report["harness_protocols"] = protocol_versions()
            manifest.record(**{f"protocol.{k}": v for k, v in report["harness_protocols"].items()})
            for s in scores:
                manifest.record(**_score_metrics(s))
        if evaluation.mt_bench:
            client, judge_model = judge
            tok, model = loaded.get()
            (out / "mt_bench").mkdir(parents=True, exist_ok=True)
            answers = mt_bench.generate_answers(model, tok, questions, evaluation.mt_bench, stop_ids(cfg, tok),
                                                cfg.runtime.seed, model_key,
                                                JsonlLog(out / ANSWERS, mt_bench.ANSWER_FIELDS))
            judgements = mt_bench.judge_answers(client, judge_model, questions, answers, prompts,
                                                evaluation.mt_bench.judge,
                                                JsonlLog(out / JUDGEMENTS, mt_bench.JUDGEMENT_FIELDS))
            refused = sum(a.get("refused_turns", 0) for a in answers.values())
            report["mt_bench"] = {**mt_bench.summarize(judgements, judge_model, evaluation.mt_bench.samples, refused),
                                  "judge_prompts": str(prompts_file)}
            manifest.record(**_mt_bench_metrics(report["mt_bench"], len(questions)))
            manifest.add_output(out / ANSWERS, role="mt_bench_answers")
            manifest.add_output(out / JUDGEMENTS, role="mt_bench_judgements")
    return report


def protocol_versions() -> dict[str, str]:
    """What each JGLUE scoring protocol followed: lm-eval's release (its task YAMLs) and llm-jp-eval's format."""
    from importlib.metadata import version

    return {LEADERBOARD: f"lm_eval {version('lm_eval')} japanese_leaderboard tasks",
            llm_jp_eval.PROTOCOL: llm_jp_eval.PROTOCOL_VERSION}


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

    evaluation = cfg.eval
    backend = harness.choose_backend(evaluation.harness, resolve_device(cfg.runtime).type)
    _, dtype = hf.device_and_dtype(cfg)
    tok, model = (loaded or _LazyModel(cfg, folder)).get() if backend == "hf" else (None, None)
    lm = harness.make_lm(backend, folder, evaluation.harness, model, tok, str(dtype).removeprefix("torch."))
    scores = harness.evaluate(lm, evaluation.harness, eval_data_dir(evaluation), cfg.runtime.seed)
    for s in scores:
        log.info("eval: %s (%s) %s %s ± %s (%d examples, %d-shot from %s; chance %s; %s)", s.task, s.protocol,
                 s.metric, _fmt(s.value), _fmt(s.stderr), s.examples, s.num_fewshot, s.fewshot_split, _fmt(s.chance),
                 s.truncation())
    return scores


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _score_metrics(s) -> dict[str, Any]:
    """A TaskScore as flat manifest metrics: `<task>.*` for lm-evaluation-harness, `llm_jp_eval.<task>.*`."""
    task = s.task if s.protocol == LEADERBOARD else f"llm_jp_eval.{s.task}"
    base = f"{task}.{s.metric}"
    metrics = {base: s.value if s.value is not None else "n/a", f"{base}_stderr": s.stderr if s.stderr is not None
               else "n/a", f"{task}.examples": s.examples, f"{task}.num_fewshot": s.num_fewshot,
               f"{task}.fewshot_split": s.fewshot_split, f"{task}.prompts": s.prompts,
               f"{task}.prompts_cut": s.prompts_cut, f"{task}.truncation": s.truncation()}
    if s.chance is not None:
        metrics[f"{base}_chance"] = s.chance
    if s.majority is not None:
        metrics[f"{task}.majority"] = s.majority
    return metrics


def _mt_bench_metrics(summary: dict[str, Any], questions: int) -> dict[str, Any]:
    def value(v: float | None) -> float | str:
        return "n/a" if v is None else v

    metrics = {"mt_bench.overall": value(summary["overall"]), "mt_bench.overall_std": value(summary["overall_std"]),
               "mt_bench.samples": summary["samples"], "mt_bench.turn1": value(summary["turn1"]),
               "mt_bench.turn2": value(summary["turn2"]), "mt_bench.questions": questions,
               "mt_bench.judged": summary["judged"], "mt_bench.rated": summary["rated"],
               "mt_bench.refused_turns": summary["refused_turns"], "mt_bench.judge_model": summary["judge_model"],
               "mt_bench.judge_prompts": summary["judge_prompts"]}
    metrics.update({f"mt_bench.{c}": value(v) for c, v in summary["categories"].items()})
    return metrics
