"""The run report: every table and figure comes from the run's artifacts (synthetic ones here)."""

import json

from factory.config import load_config
from factory.report import write_report


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def manifest(run, stage, metrics, sub="", config=None):
    write_json(run / stage / sub / "manifest.json", {"stage": stage, "metrics": metrics, "config": config or {},
                                                     "wall_seconds": 1.5, "ended_at": "t"})


def metrics_log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_reads_every_figure_from_the_artifacts(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("configs/demo-cpu.yaml", [f"run.dir={run}"])
    manifest(run, "data", {"in": 100, "kept": 61, "rejected": 39, "rejected.length": 30, "rejected.langmix": 9,
                           "rejected.near_dup": 0})
    manifest(run, "pretrain", {"steps": 4, "final_loss": 6.125, "lineage_tokens": 4096})
    metrics_log(run / "pretrain" / "metrics.jsonl", [
        {"iteration": i, "loss": 9.0 - i, "lr": 1e-3, "tokens": 1024 * i} for i in range(1, 5)])
    manifest(run, "cpt", {"steps": 2, "final_loss": 4.5, "tokens_seen_total": 6144})  # a manifest of before run_tokens
    metrics_log(run / "cpt" / "metrics.jsonl", [
        {"iteration": i, "loss": 5.0 - i / 4, "lr": 5e-4, "tokens": 4096 + 1024 * i, "valid_loss": 5.5,
         "moe_tokens_per_expert": {"layer0": [10, 20, 30, 40], "layer1": [25, 25, 25, 25]}} for i in (1, 2)])
    manifest(run, "upcycle", {"max_abs_logit_diff": 2.5e-6, "mean_abs_logit_diff": 1e-7}, "checkpoints",
             {"upcycle": {"tolerance": 1e-5, "mode": "copy"}})
    manifest(run, "export", {"max_abs_logit_diff": 3.75e-6, "architecture": "mixtral", "shards": 1, "bytes": 2e6},
             "hf", {"export": {"probe": {"tolerance": 1e-4}}})
    manifest(run, "sft", {"steps": 2, "first_loss": 8.5, "last_loss": 7.25}, "hf")
    write_json(run / "sft" / "hf" / "loss_curve.json", [{"step": 1, "loss": 8.5}, {"step": 2, "loss": 7.25}])

    text = write_report(cfg).read_text()
    out = run / "report"
    for png in ("data_funnel", "loss", "lr", "expert_load", "verification", "posttrain"):
        assert (out / f"{png}.png").stat().st_size > 1000, png
        assert f"({png}.png)" in text
    assert "| rejected.length | 30 | 30.0% |" in text and "rejected.near_dup" not in text
    assert "| pretrain | 4 | 4,096 | 6.125 |" in text and "| cpt | 2 | 6,144 | 4.5 |" in text
    assert "| upcycle | 2.5e-06 | 1e-07 | 1e-05 | copy |" in text
    assert "| export | 3.75e-06 | - | 0.0001 | mixtral |" in text
    assert "| sft | 2 | 8.5 | 7.25 | - |" in text
    assert "_tokenizer report.json: not found in this run._" in text
    assert "_eval manifest: not found in this run._" in text


def _score(task, metric, value, stderr, chance, majority=None):
    return {"task": task, "metric": metric, "value": value, "stderr": stderr, "examples": 20, "num_fewshot": 0,
            "chance": chance, "majority": majority}


def test_report_benchmarks_section_plots_checkpoint_scores_against_tokens(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("configs/demo-cpu.yaml", [f"run.dir={run}"])
    manifest(run, "eval", {"jcommonsenseqa.acc": 0.25})
    points = (("pretrain (dense)", 40, 40960, 0.21), ("pretrain (dense)", 60, 61440, 0.24), ("cpt (MoE)", 10, 71680, 0.3))
    checkpoints = [{"label": label, "iteration": it, "tokens": tokens, "moe": label.endswith("(MoE)"),
                    "scores": [_score("jcommonsenseqa", "acc", acc, 0.05, 0.2)]} for label, it, tokens, acc in points]
    write_json(run / "eval" / "report.json", {
        "model": "runs/x/dpo/hf",
        "harness": [_score("jcommonsenseqa", "acc", 0.25, 0.1, 0.2, 0.3),
                    _score("jnli", "acc", 0.75, 0.1, 1 / 3, 0.75)],
        "mt_bench": {"judge_model": "gpt-4", "judged": 4, "rated": 3, "overall": 5.5, "turn1": 6.0, "turn2": 5.0,
                     "categories": {"math": 4.0, "writing": 7.0}},
        "checkpoints": checkpoints})
    text = write_report(cfg).read_text()
    assert (run / "report" / "scores_vs_tokens.png").stat().st_size > 1000 and "(scores_vs_tokens.png)" in text
    assert "| jcommonsenseqa | acc | 0.250 | 0.100 | 20 | 0 | 0.200 | 0.300 | near chance |" in text
    assert "| jnli | acc | 0.750 | 0.100 | 20 | 0 | 0.333 | 0.750 | majority-class level |" in text
    assert "Judge: `gpt-4` with the prompts of `FastChat`; 3 of 4 judgements gave a rating" in text
    assert "| writing | 7.00 |" in text and "| **overall** | **5.50** |" in text
    assert "| cpt (MoE) | 10 | 71,680 | 0.300 ± 0.050 |" in text
