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
    manifest(run, "pretrain", {"steps": 4, "final_loss": 6.125, "tokens_seen_total": 4096})
    metrics_log(run / "pretrain" / "metrics.jsonl", [
        {"iteration": i, "loss": 9.0 - i, "lr": 1e-3, "tokens": 1024 * i} for i in range(1, 5)])
    manifest(run, "cpt", {"steps": 2, "final_loss": 4.5})
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
    assert "| pretrain | 4 | 4,096 | 6.125 |" in text
    assert "| upcycle | 2.5e-06 | 1e-07 | 1e-05 | copy |" in text
    assert "| export | 3.75e-06 | - | 0.0001 | mixtral |" in text
    assert "| sft | 2 | 8.5 | 7.25 | - |" in text
    assert "_tokenizer report.json: not found in this run._" in text
    assert "_eval manifest: not found in this run._" in text
