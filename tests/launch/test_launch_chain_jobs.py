"""The pipeline as a chain of jobs on a real one-node Slurm (the session's slurmctld + slurmd): tokenizer, data
and pack of a tiny corpus submitted in one command run in dependency order and record pipeline.json as the
in-process pipeline does; a stage that fails cancels the jobs after it, and a resubmission runs only from it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.launch.conftest import job_environment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "tokenizer" / "fixtures" / "mixed_ja_en.txt"
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
COMPARED = ("status", "reason", "fingerprint", "values", "after", "continues")
"""The pipeline.json fields a chain's job and the in-process pipeline must write alike (times differ)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Tokenizer text and two JSONL corpora from the tokenizer fixture (a few hundred lines)."""
    folder = tmp_path_factory.mktemp("chain-corpus")
    lines = [line for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    (folder / "text.txt").write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    for name, shift in (("docs", 1), ("docs2", 2)):
        rows = [{"text": line + lines[(i + shift) % len(lines)]} for i, line in enumerate(lines)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


def _config(corpus: Path, folder: Path, docs: str = "docs.jsonl") -> Path:
    raw = {"run": {"name": folder.name, "dir": str(folder / "run")},
           "tokenizer": {"inputs": [str(corpus / "text.txt")], "vocab_size": 1000, "character_coverage": 0.98},
           "data": {"inputs": [{"path": str(corpus / docs)}], "text_unit": "line", "num_workers": 1},
           "pack": {"datasets": [{"name": "docs", "path": "${run.dir}/data/kept.jsonl"}], "num_workers": 1},
           "blend": {"phases": [{"name": "main", "datasets": [{"dataset": "docs", "repeat": 1}]}]},
           "launch": {"gpus_per_node": 0, "venv": str(ROOT / ".venv"), "time": "00:10:00",
                      "signal_seconds_before_timeout": 30}}
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def _run(slurm, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env={**job_environment(slurm.env), **(env or {})},
                          capture_output=True, text=True)


def _submit(slurm, config: Path) -> dict[str, str]:
    """Submit the chain; its job ids by stage (the report's too)."""
    done = _run(slurm, "factory.launch", "slurm", "pipeline", "--config", str(config), "--submit")
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"^  (\w+) +job (\d+): ", done.stdout, re.MULTILINE))


def _jobs(slurm, ids) -> dict[str, dict[str, str]]:
    out = {}
    for job_id in ids:
        text = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=slurm.env, capture_output=True,
                              text=True).stdout
        out[job_id] = dict(re.findall(r"(\w+)=(\S*)", text))
    return out


def _wait_until_ended(slurm, ids, timeout: float = 400) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = {i: info.get("JobState", "") for i, info in _jobs(slurm, ids).items()}
        if all(state in ENDED for state in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs {ids} not ended within {timeout:.0f}s: {states}")


def _records(run_dir: Path) -> dict[str, dict]:
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    return {stage: {key: record.get(key) for key in COMPARED} for stage, record in stages.items()}


def _manifests(run_dir: Path) -> dict[str, str]:
    return {stage: (run_dir / stage / "manifest.json").read_text() for stage in ("tokenizer", "data", "pack")}


def test_a_chain_runs_in_dependency_order_and_records_what_the_pipeline_does(slurm, corpus, tmp_path):
    config = _config(corpus, tmp_path)
    run_dir = tmp_path / "run"
    assert _run(slurm, "factory.pipeline", "--config", str(config), "--no-report").returncode == 0
    in_process = _records(run_dir)
    run_dir.rename(tmp_path / "in-process")

    with slurm.partition_down():  # no job can start, so none ends before the checks below
        ids = _submit(slurm, config)
        assert list(ids) == ["tokenizer", "data", "pack", "report"]
        again = _run(slurm, "factory.launch", "slurm", "pipeline", "--config", str(config), "--submit")
        assert again.returncode == 0 and again.stdout.count("(kept: already") == 4, again.stdout
        refused = _run(slurm, "factory.pipeline", "--config", str(config))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"run.dir {run_dir}: its Slurm chain is queued or running (" in refused.stderr

    assert set(_wait_until_ended(slurm, ids.values()).values()) == {"COMPLETED"}
    records = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    tokenizer, data, pack = records["tokenizer"], records["data"], records["pack"]
    assert data["started_at"] < tokenizer["ended_at"] and tokenizer["started_at"] < data["ended_at"]
    assert pack["started_at"] >= max(tokenizer["ended_at"], data["ended_at"])
    assert _records(run_dir) == in_process
    assert (run_dir / "report" / "report.md").is_file()
    status = _run(slurm, "factory.launch", "status", "--config", str(config))
    assert status.returncode == 0 and f"report: {run_dir / 'report' / 'report.md'}" in status.stdout
    assert re.search(rf"^pack +{ids['pack']} +COMPLETED +done ", status.stdout, re.MULTILINE), status.stdout


def test_a_failed_stage_cancels_the_jobs_after_it_and_a_resubmission_runs_from_it(slurm, corpus, tmp_path):
    config = _config(corpus, tmp_path)
    run_dir = tmp_path / "run"
    assert _run(slurm, "factory.pipeline", "--config", str(config), "--no-report").returncode == 0
    before = _manifests(run_dir)
    _config(corpus, tmp_path, docs="missing.jsonl")  # a bad dataset path, introduced after the first run

    ids = _submit(slurm, config)
    assert list(ids) == ["data", "pack", "report"]
    assert _wait_until_ended(slurm, ids.values()) == {ids["data"]: "FAILED", ids["pack"]: "CANCELLED",
                                                       ids["report"]: "CANCELLED"}
    log = Path(json.loads((run_dir / "chain.json").read_text())["jobs"]["data"]["log"])
    failure = (f"error: stage data failed (job {ids['data']}, RUNNING, log {log}): data.inputs: not found: "
               f"{corpus / 'missing.jsonl'}; cancelled the jobs that waited for it: pack (job {ids['pack']}), "
               f"report (job {ids['report']})")
    assert failure in log.read_text().splitlines()
    assert _manifests(run_dir) == before
    status = _run(slurm, "factory.launch", "status", "--config", str(config))
    assert status.returncode == 1 and status.stderr.splitlines() == [
        f"error: stage data failed (job {ids['data']}, FAILED, log {log}): data.inputs: not found: "
        f"{corpus / 'missing.jsonl'}; cancelled the jobs that waited for it: pack (job {ids['pack']}), "
        f"report (job {ids['report']})"]

    _config(corpus, tmp_path, docs="docs2.jsonl")  # fixed: another corpus that exists
    again = _submit(slurm, config)
    assert list(again) == ["data", "pack", "report"]
    assert set(_wait_until_ended(slurm, again.values()).values()) == {"COMPLETED"}
    assert _manifests(run_dir)["tokenizer"] == before["tokenizer"] and _manifests(run_dir)["pack"] != before["pack"]
    assert _run(slurm, "factory.launch", "status", "--config", str(config)).returncode == 0

