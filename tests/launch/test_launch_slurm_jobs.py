"""The rendered sbatch scripts on a real Slurm (slurmctld + slurmd + munge): signals, time limit, cancel, requeue.

Each job is `python -m factory.launch slurm pretrain --submit` of the tiny training run on a CPU partition
(`launch.gpus_per_node: 0`, torchrun with one worker), submitted from the repository root as a user would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from factory.runner import run_stage
from factory.stage import STAGES
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ITERS = 400
"""Iterations of every job: long enough to be signalled after the first periodic checkpoint."""
SAVE_INTERVAL = 50


class Job:
    """One submitted job: its id, `scontrol show job` fields, its log, its run folder."""

    def __init__(self, slurm, packed: Path, tmp_path: Path, name: str, **launch):
        self.slurm, self.run_dir = slurm, tmp_path / name
        raw = train_config(packed, self.run_dir, train_iters=ITERS,
                           checkpoint={"save_interval": SAVE_INTERVAL}).to_dict()
        raw["launch"] = {"gpus_per_node": 0, "venv": str(ROOT / ".venv"), "output_dir": str(tmp_path / "logs"),
                         "job_name": name, "time": "00:10:00", "signal_seconds_before_timeout": 30,
                         "max_restarts": 1, **launch}
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw))
        done = subprocess.run([sys.executable, "-m", "factory.launch", "slurm", "pretrain", "--config", str(config),
                               "--submit"], cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        self.id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
        self.log_path = tmp_path / "logs" / f"{name}-{self.id}.out"
        self.root = self.run_dir / "pretrain" / "checkpoints"

    @property
    def env(self) -> dict[str, str]:
        return {**self.slurm.env, "OMP_NUM_THREADS": "1"}

    def info(self) -> dict[str, str]:
        out = subprocess.run(["scontrol", "show", "job", "-o", self.id], env=self.env, capture_output=True,
                             text=True).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log yet)"

    def checkpoint(self) -> int | None:
        tracker = self.root / "latest_checkpointed_iteration.txt"
        return int(tracker.read_text()) if tracker.exists() else None

    def wait(self, ready, what: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"job {self.id}: {what} not within {timeout:.0f}s; {self.info()}\n{self.log()[-4000:]}")

    def state(self) -> str:
        return self.info().get("JobState", "")

    def scontrol(self, *args: str) -> None:
        subprocess.run(["scontrol", *args], env=self.env, check=True, capture_output=True, text=True)

    def scancel(self, *args: str) -> None:
        subprocess.run(["scancel", *args, self.id], env=self.env, check=True, capture_output=True, text=True)

    def run_requeued_now(self, restarts: int = 1) -> None:
        """Slurm holds a requeued job ~2 minutes (BeginTime); start it once slurmd takes a new credential.

        slurmd refuses a job credential issued in the same second as the revocation of the previous run's
        ("Job credential revoked"), so the start waits 2 s past the requeue.
        """
        self.wait(lambda: self.info().get("Restarts") == str(restarts) and self.state() == "PENDING", "requeue")
        time.sleep(2)
        self.scontrol("update", f"jobid={self.id}", "starttime=now")

    def wait_until_finished(self) -> str:
        self.wait(lambda: self.state() in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), "the end")
        return self.state()


@pytest.fixture(scope="module")
def reference(packed_data, tmp_path_factory) -> list[float]:  # noqa: F811
    """The loss curve of the same run without interruption."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_stage("pretrain", STAGES["pretrain"], train_config(packed_data, run_dir, train_iters=ITERS,
                                                           checkpoint={"save_interval": SAVE_INTERVAL}))
    return losses(run_dir)


def test_usr1_to_the_batch_shell_saves_requeues_and_resumes_the_same_curve(slurm, packed_data, tmp_path,  # noqa: F811
                                                                          reference):
    job = Job(slurm, packed_data, tmp_path, "usr1")
    job.wait(lambda: job.checkpoint() is not None, "a periodic checkpoint")
    first = job.checkpoint()
    job.scancel("--batch", "--signal=USR1")
    job.run_requeued_now()
    assert job.wait_until_finished() == "COMPLETED", job.log()[-4000:]
    log = job.log()
    stopped = int(re.search(r"stopped by signal at iteration (\d+)", log).group(1))
    assert first < stopped < ITERS, log[-4000:]
    assert f"resuming at iteration {stopped} " in log and "restart 1:" in log, log[-4000:]
    assert losses(job.run_dir) == reference
