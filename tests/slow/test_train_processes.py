"""Training as users run it, in subprocesses: SIGKILL/SIGTERM then resume, and 2-process TP=2 / EP=2."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from factory.config import load_config
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from factory.train import integrity
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _stage(config: Path, *overrides: str, nproc: int = 1, stage: str = "pretrain") -> list[str]:
    launcher = [sys.executable, "-m", "factory.stage"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "-m", "factory.stage"]
    return launcher + [stage, "--config", str(config), *overrides]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_when(proc: subprocess.Popen, metrics: Path, lines: int, sig: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    proc.wait(timeout=300)
    try:  # anything the killed run left in its group goes with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(packed_data, tmp_path):
    iters = 8
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "straight", train_iters=iters))  # reference
    config = _write(train_config(packed_data, tmp_path / "killed", train_iters=iters,
                                 checkpoint={"save_interval": 1}), tmp_path / "b.yaml")
    kill_after = random.Random().randint(2, iters - 2)
    proc = subprocess.Popen(_stage(config), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _kill_when(proc, tmp_path / "killed/pretrain/metrics.jsonl", kill_after, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill at step {kill_after}"
    _run(_stage(config))
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight"), f"killed after step {kill_after}"


def test_sigterm_saves_and_exits_0_then_resumes(packed_data, tmp_path):
    config = _write(train_config(packed_data, tmp_path, train_iters=40, checkpoint={"save_interval": 100}),
                    tmp_path / "c.yaml")
    log = tmp_path / "sigterm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_stage(config), cwd=ROOT, env=ENV, stdout=out, stderr=out, start_new_session=True)
        _kill_when(proc, tmp_path / "pretrain/metrics.jsonl", 2, signal.SIGTERM)
    assert proc.returncode == 0 and "stopped: pretrain: stopped by signal" in log.read_text(), log.read_text()[-3000:]
    saved = int((tmp_path / "pretrain/checkpoints/latest_checkpointed_iteration.txt").read_text())
    assert 2 <= saved < 40
    _run(_stage(config))
    assert len(losses(tmp_path)) == 40


OVERLAP = ["cpt.data_parallel.overlap_grad_reduce=true", "cpt.data_parallel.bucket_size=2000",
           "cpt.micro_batch_size=1"]
"""Data parallelism with gradients reduced bucket by bucket during backward (several buckets, two micro-batches
per rank: only the last may start the reduction, which the wired no_sync_func ensures)."""


@pytest.fixture(scope="module")
def one_process(packed_data, tmp_path_factory):  # noqa: F811
    """one_process(moe) -> (a 2-iteration checkpoint, the losses of a 4-iteration cpt from it in
    one process); run once per model kind for the layouts that compare with it, in this process (the
    boundary under test is the two-process run's)."""
    runs: dict[bool, tuple[str, list[float]]] = {}

    def get(moe: bool) -> tuple[str, list[float]]:
        if moe not in runs:
            root = tmp_path_factory.mktemp("moe" if moe else "dense")
            run_stage(STAGES["pretrain"], train_config(packed_data, root / "base", moe=moe, train_iters=2))
            init = str(root / "base/pretrain/checkpoints")
            run_stage(STAGES["cpt"], train_config(packed_data, root / "one", moe=moe, stage="cpt", train_iters=4,
                                                  init_from=init))
            runs[moe] = init, losses(root / "one", "cpt")
        return runs[moe]

    return get


LAYOUTS = {"tp2-dense": (False, ["parallel.tensor=2"]), "pp2-dense": (False, ["parallel.pipeline=2"]),
           "ep2-moe": (True, ["parallel.expert=2"]), "dp2-overlap": (False, OVERLAP)}
"""Each two-process layout: whether its model is an MoE, and its `key=value` overrides."""


@pytest.fixture(scope="module")
def two_processes(packed_data, one_process, tmp_path_factory):  # noqa: F811
    """Every layout's 4-iteration cpt on 2 processes, all in one torchrun launch (factory.doctor.stage_runs: each
    config runs as `python -m factory.stage cpt --config CONFIG` runs it, its own model, optimizer and data, in
    one process group; starting 2 ranks was most of each launch's cost): the folder holding each layout's run
    folder, and the launch's log."""
    root = tmp_path_factory.mktemp("two")
    configs = []
    for name, (moe, overrides) in LAYOUTS.items():  # the overrides applied as the command line applies them
        init, _ = one_process(moe)
        plain = _write(train_config(packed_data, root / name, moe=moe, stage="cpt", train_iters=4, init_from=init),
                       root / f"{name}-plain.yaml")
        configs.append(str(_write(load_config(plain, overrides), root / f"{name}.yaml")))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "factory.doctor.stage_runs", "cpt", *configs]
    return root, _run(launch).stderr


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_processes_match_one(one_process, two_processes, layout):
    """Both runs continue (cpt) from one checkpoint, so they start from the same weights."""
    moe, overrides = LAYOUTS[layout]
    _, one = one_process(moe)
    root, log = two_processes
    if overrides is OVERLAP:
        assert "data-parallel overlap: grad reduce on, param gather off (plain optimizer), bucket 2,000" in " ".join(
            log.split()), log  # the log handler wraps long lines
    assert losses(root / layout, "cpt") == pytest.approx(one, abs=1e-5)


def _wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 300) -> int:
    """The first periodic checkpoint's iteration, once its tracker is written."""
    tracker = root / "latest_checkpointed_iteration.txt"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not tracker.exists():
        time.sleep(0.05)
    assert tracker.exists(), "no periodic checkpoint before the run ended"
    return int(tracker.read_text())


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "background"])
def test_usr1_to_the_process_group_after_a_periodic_checkpoint_saves_and_exits_0(packed_data, tmp_path, async_save):
    """As torchrun and Slurm deliver it: to every process of the group; then SIGTERM every 0.1 s until the
    process ends, so further signals land in the save and in the exit. With background saves the signal also
    lands while a periodic save is being written: it is committed, then the signal's iteration is saved."""
    checkpoint = {"save_interval": 2, "async_save": async_save}
    config = _write(train_config(packed_data, tmp_path, train_iters=2000, checkpoint=checkpoint), tmp_path / "c.yaml")
    root = tmp_path / "pretrain/checkpoints"
    log = tmp_path / "usr1.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_stage(config), cwd=ROOT, env=ENV, stdout=out, stderr=out, start_new_session=True)
        try:
            first = _wait_for_checkpoint(proc, root)
            os.killpg(proc.pid, signal.SIGUSR1)
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline:  # more signals during the save and the exit
                time.sleep(0.1)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        finally:
            _kill_group(proc.pid)
    text = log.read_text()
    assert proc.returncode == 0 and "stopped: pretrain: stopped by signal" in text, text[-3000:]
    saved = int((root / "latest_checkpointed_iteration.txt").read_text())
    assert first < saved < 2000 and f"stopped by signal at iteration {saved}" in text, text[-3000:]
    assert not list(root.glob(".*.partial"))
    assert integrity.problems(ckpt.iteration_dir(root, saved)) == []
