"""`python -m factory.pipeline --job STAGE`, what each job of a Slurm chain runs: it records its stage as the
pipeline does with the reason the chain was submitted for, continues a requeued stage's own output, and refuses
(never moves) an output that appeared since the submission."""

from __future__ import annotations

import pytest

from factory import chain_record
from factory.errors import ConfigError, DataError
from factory.pipeline import main, run_job, run_pipeline
from factory.run_state import load_state


def _submitted(run_dir, **reasons: str) -> None:
    """chain.json as a submission writes it: job 77 for each stage, with the reason it runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    jobs = {stage: {"job_id": "77", "reason": reason} for stage, reason in reasons.items()}
    chain_record.update(run_dir, lambda chain: chain["jobs"].update(jobs))


def test_a_job_records_its_stage_with_the_reason_of_its_chain(fakes, demo_config, monkeypatch, capsys):
    cfg = demo_config()
    _submitted(cfg.run.dir, tokenizer="no record of a previous run")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert main(["--config", "configs/demo-cpu.yaml", f"run.dir={cfg.run.dir}", "--job", "tokenizer"]) == 0
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # not the job chain.json names for data
    assert main(["--config", "configs/demo-cpu.yaml", f"run.dir={cfg.run.dir}", "--job", "data"]) == 0
    records = load_state(cfg.run.dir)["stages"]
    assert fakes.calls == ["tokenizer", "data"] and not (cfg.run.dir / "report").exists()
    assert [(records[s]["status"], records[s]["reason"]) for s in ("tokenizer", "data")] == [
        ("done", "no record of a previous run"), ("done", "run by a Slurm job")]
    assert capsys.readouterr().out.splitlines() == ["tokenizer  run   no record of a previous run",
                                                    "data  run   run by a Slurm job"]


def test_a_requeued_job_continues_its_own_output(fakes, demo_config):
    cfg = demo_config()
    fakes.fail["pretrain"] = DataError("node lost")
    fakes.partial.add("pretrain")
    with pytest.raises(Exception, match="stage pretrain: node lost"):
        run_pipeline(cfg)
    del fakes.fail["pretrain"]
    fakes.calls.clear()
    run_job(cfg, "pretrain")
    assert fakes.calls == ["pretrain"] and (cfg.run.dir / "pretrain" / "partial").is_file()
    assert load_state(cfg.run.dir)["stages"]["pretrain"]["status"] == "done"
    assert not list(cfg.run.dir.glob("pretrain.prev-*"))


def test_an_output_that_appeared_since_the_submission_is_refused_not_moved(fakes, demo_config):
    run_pipeline(demo_config())
    fakes.calls.clear()
    cfg = demo_config("pretrain.optimizer.lr=1e-3")
    with pytest.raises(ConfigError) as info:
        run_job(cfg, "pretrain")
    assert info.value.problems[0].startswith("pretrain: config changed: pretrain.optimizer.lr; its earlier output")
    assert fakes.calls == [] and (cfg.run.dir / "pretrain" / "out.txt").is_file()
    assert not list(cfg.run.dir.glob("pretrain.prev-*"))
