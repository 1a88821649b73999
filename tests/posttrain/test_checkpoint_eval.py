"""Megatron checkpoints scored by iteration: which iterations, their tokens, dense vs MoE, one export each."""

from __future__ import annotations

import pytest
import torch

from factory.errors import ConfigError
from factory.posttrain.benchmark_config import CheckpointSeries
from factory.posttrain.checkpoint_eval import score_checkpoints, sweep_points
from factory.posttrain.harness import TaskScore
from tests.posttrain.conftest import post_config


def save_iterations(root, base: dict, iterations: dict[int, int]) -> None:
    """One tiny model saved at each iteration, with the tokens it had seen (as the training engine records)."""
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint import save
    from factory.train.checkpoint_meta import CheckpointMeta
    from tests.conftest import make_config

    cfg = make_config(base)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        model = build_gpt_model(cfg.model, rt)
        for iteration, tokens in iterations.items():
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.01)
            save(root, iteration, model, cfg.model, rt, meta=CheckpointMeta(lineage_tokens=tokens, run_tokens=tokens))


def test_missing_folders_and_iterations_are_listed_together(tmp_path):
    (tmp_path / "ckpt" / "iter_0000010").mkdir(parents=True)
    series = [CheckpointSeries(path=tmp_path / "nowhere"),
              CheckpointSeries(path=tmp_path / "ckpt", iterations=[10, 20])]
    with pytest.raises(ConfigError) as info:
        sweep_points(series)
    assert info.value.lines() == [
        f"no such checkpoint folder: eval.checkpoints[0].path={tmp_path / 'nowhere'}",
        f"eval.checkpoints[1].iterations: [20] not found in {tmp_path / 'ckpt'} (present: 10)"]


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    """A run folder with a dense pretrain at iterations 1 and 2, an MoE cpt at 1, and the tokenizer."""
    from tests.conftest import TINY_DENSE, TINY_MOE
    from tests.convert.conftest import write_tokenizer

    run = tmp_path_factory.mktemp("run")
    save_iterations(run / "pretrain" / "checkpoints", TINY_DENSE, {1: 4096, 2: 8192})
    save_iterations(run / "cpt" / "checkpoints", TINY_MOE, {1: 12288})
    write_tokenizer(run / "tokenizer")  # <run.dir>/tokenizer: what the exports carry
    return run


def _series(run, moe_label=None) -> list[dict]:
    return [{"path": str(run / "pretrain" / "checkpoints")},
            {"path": str(run / "cpt" / "checkpoints"), **({"label": moe_label} if moe_label else {})}]


def test_dense_and_moe_iterations_are_exported_and_scored_with_their_tokens(checkpoint_run):
    from transformers import AutoModelForCausalLM

    cfg = post_config(checkpoint_run, eval={"data_dir": str(checkpoint_run), "harness": {},
                                            "checkpoints": _series(checkpoint_run, "MoE")})

    def parameters(folder):  # a score that tells the exported folders apart
        model = AutoModelForCausalLM.from_pretrained(folder)
        return [TaskScore("size", "parameters", float(model.num_parameters()), None, 1, 0, None)]

    rows = score_checkpoints(cfg, parameters)
    assert [(r["label"], r["iteration"], r["tokens"], r["moe"]) for r in rows] == [
        ("pretrain (dense)", 1, 4096, False), ("pretrain (dense)", 2, 8192, False), ("MoE", 1, 12288, True)]
    dense, _, moe = (r["scores"][0]["value"] for r in rows)
    assert moe > dense  # eight experts instead of one MLP
    assert rows[0]["checkpoint"].endswith("pretrain/checkpoints/iter_0000001")


def test_the_eval_stage_scores_checkpoints_into_the_run_report_plot(checkpoint_run, eval_data, llama_dir):
    from factory.report import write_report
    from factory.runner import run_stage
    from factory.registry import STAGES

    cfg = post_config(checkpoint_run, eval={
        "model": str(llama_dir), "data_dir": str(eval_data), "checkpoints": _series(checkpoint_run),
        "harness": {"tasks": ["jcommonsenseqa"], "num_fewshot": 0, "limit": 2}})
    metrics = run_stage(STAGES["eval"], cfg).to_dict()["metrics"]
    assert metrics["checkpoints_scored"] == 3 and metrics["jcommonsenseqa.examples"] == 2
    text = write_report(cfg).read_text()
    assert (checkpoint_run / "report" / "scores_vs_tokens.png").stat().st_size > 1000
    assert "![scores against tokens](scores_vs_tokens.png)" in text
    for row in ("| pretrain (dense) | 1 | 4,096 |", "| pretrain (dense) | 2 | 8,192 |", "| cpt (MoE) | 1 | 12,288 |"):
        assert row in text
