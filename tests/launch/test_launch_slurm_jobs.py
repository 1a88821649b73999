"""The rendered sbatch scripts on a real Slurm (slurmctld + slurmd + munge): signals, time limit, cancel, requeue.

Each job is `python -m factory.launch slurm pretrain --submit` of the tiny training run on a CPU partition
(`launch.gpus_per_node: 0`: torchrun with one worker), submitted from the repository root as a user would, or
the pretrain job of `factory.launch slurm pipeline --submit` with the chain's report job waiting for it.
Loss curves are compared with uninterrupted runs of the same config, trained beside the jobs: whole curves, but
for the 3500-iteration time-limit job, whose curve is compared through 100 iterations past its resume point.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from factory.records import read_jsonl
from tests.launch.conftest import job_environment
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ITERS = 300
"""Iterations of the signalled jobs: long enough to be signalled after their first periodic checkpoint. A signal
sent once the checkpoint of iteration 50 is there stopped the training at iterations 54-101 on the shared 2-core
build machine (the way from scancel through the batch shell and torchrun to the worker takes seconds when loaded);
300 leaves 200 iterations past the latest of those stops (the resumed jobs and the reference train every iteration
up to it: 400 cost the module ~400 iterations more)."""
TIME_LIMIT_ITERS = 3500
"""Iterations of the time-limit job: still training when Slurm's pre-timeout signal comes (at most ~32 s after its
first iteration) unless an iteration takes under ~9 ms (13 ms on the idle 2-core build machine; 34 ms and more
when it is shared)."""
SAVE_INTERVAL = 50
TIME_LIMIT_SAVE_INTERVAL = 1000
"""The time-limit job and its reference save every 1000 iterations: the job's checkpoint that matters is the one it
saves when signalled, and saves every SAVE_INTERVAL would cost each run 100 saves."""
PAST_RESUME = 100
"""Iterations past its resume point through which the time-limit job's curve is compared with the reference's: each
step's loss depends on all that a resume restores (weights, optimizer state, the LR schedule's step, the data
position), so a wrong one shows at once."""
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _config(packed: Path, folder: Path, name: str, iters: int, save_interval: int = SAVE_INTERVAL, **launch) -> Path:
    raw = train_config(packed, folder / name, train_iters=iters, checkpoint={"save_interval": save_interval}).to_dict()
    raw["launch"] = {"gpus_per_node": 0, "venv": str(ROOT / ".venv"), "output_dir": str(folder / "logs"),
                     "job_name": name, "time": "00:10:00", "signal_seconds_before_timeout": 30,
                     "max_restarts": 1, **launch}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Job:
    """One job submitted with `factory.launch slurm --submit`: its Slurm fields, log and checkpoints. With
    `chain`, the pretrain job of `factory.launch slurm pipeline --submit` (a report job waits for it)."""

    def __init__(self, slurm, config: Path, chain: bool = False):
        self.env = job_environment(slurm.env)
        raw = yaml.safe_load(config.read_text())
        done = subprocess.run([sys.executable, "-m", "factory.launch", "slurm", "pipeline" if chain else "pretrain",
                               "--config", str(config), "--submit"], cwd=ROOT, env=self.env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        self.run_dir = Path(raw["run"]["dir"])
        if chain:
            self.chain = json.loads((self.run_dir / "chain.json").read_text())["jobs"]
            self.id, self.log_path = self.chain["pretrain"]["job_id"], Path(self.chain["pretrain"]["log"])
        else:
            self.id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
            self.log_path = Path(raw["launch"]["output_dir"]) / f"{raw['launch']['job_name']}-{self.id}.out"
        self.tracker = self.run_dir / "pretrain" / "checkpoints" / "latest_checkpointed_iteration.txt"

    def info(self, job_id: str | None = None) -> dict[str, str]:
        out = self._slurm("scontrol", "show", "job", "-o", job_id or self.id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def _fields(self, *names: str) -> tuple[str, ...]:
        """Several fields of one `scontrol show job`."""
        info = self.info()
        return tuple(info.get(name, "") for name in names)

    def state(self) -> str:
        return self.info().get("JobState", "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log yet)"

    def checkpoint(self) -> int | None:
        return int(self.tracker.read_text()) if self.tracker.exists() else None

    def wait(self, ready, what: str, timeout: float = 300, every: float = 0.1) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(every)
        raise AssertionError(f"job {self.id}: {what} not within {timeout:.0f}s; {self.info()}\n{self.log()[-4000:]}")

    def wait_for_checkpoint(self) -> int:
        self.wait(lambda: self.checkpoint() is not None or self.state() in ENDED, "a periodic checkpoint")
        assert self.state() == "RUNNING", f"the job ended before its first checkpoint\n{self.log()[-4000:]}"
        return self.checkpoint()

    def scancel(self, *options: str) -> None:
        self._slurm("scancel", *options, self.id, check=True)

    def start_requeued(self, *updates: str) -> None:
        """Slurm holds a requeued job ~2 minutes (BeginTime); start it once slurmd accepts its new credential.

        slurmd refuses a credential issued in the same second as the revocation of the previous run's
        ("Job credential revoked"), so the start waits 2 s past the requeue.
        """
        self.wait(lambda: self._fields("Restarts", "JobState") == ("1", "PENDING"), "the requeue")
        time.sleep(2)
        self.update("starttime=now", *updates)

    def update(self, *fields: str) -> None:
        self._slurm("scontrol", "update", f"jobid={self.id}", *fields, check=True)

    def wait_until_ended(self) -> str:
        self.wait(lambda: self.state() in ENDED, "the end", every=0.5)  # a job runs for many seconds: fewer scontrols
        return self.state()

    def worker_pid(self) -> int:
        """The training worker: the child of the step's task (torchrun) that runs `factory.stage`."""
        rows = [line.split() for line in self._slurm("scontrol", "listpids", self.id).stdout.splitlines()[1:]]
        tasks = [int(row[0]) for row in rows if row[2] != "batch" and row[3] != "-"]
        assert len(tasks) == 1, rows
        workers = [p for p in psutil.Process(tasks[0]).children() if "factory.stage" in p.cmdline()]
        assert len(workers) == 1, [p.cmdline() for p in psutil.Process(tasks[0]).children()]
        return workers[0].pid

    def _slurm(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        assert not check or done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
        return done


def _stopped_at(job: Job) -> int:
    found = re.findall(r"stopped by signal at iteration (\d+)", job.log())
    assert len(found) == 1, job.log()[-4000:]
    return int(found[0])


def _iterations(job: Job) -> list[int]:
    return [record["iteration"] for record in read_jsonl(job.run_dir / "pretrain" / "metrics.jsonl")]


class Reference:
    """An uninterrupted `factory.stage pretrain` run of a job's config (`_config`), trained beside the jobs."""

    def __init__(self, packed: Path, folder: Path, iters: int, save_interval: int = SAVE_INTERVAL):
        self.run_dir, self.log = folder / "reference", (folder / "reference.log").open("w")
        config = _config(packed, folder, "reference", iters, save_interval)
        self.proc = subprocess.Popen([sys.executable, "-m", "factory.stage", "pretrain", "--config", str(config)],
                                     cwd=ROOT, env=job_environment(os.environ), stdout=self.log, stderr=self.log)

    def curve(self) -> list[float]:
        """The whole loss curve, once the run has ended."""
        assert self.proc.wait(timeout=600) == 0, self._log_tail()
        return losses(self.run_dir)

    def curve_through(self, iteration: int) -> list[float]:
        """The losses of iterations 1..`iteration`, those of the whole run (the same config, train_iters with it, so
        the same LR schedule and data order); the run is stopped once it has logged them."""
        deadline = time.time() + 600
        while self.proc.poll() is None and self._last_iteration() < iteration:
            assert time.time() < deadline, self._log_tail()
            time.sleep(0.5)
        self.close()
        assert self.proc.returncode in (0, -signal.SIGKILL), self._log_tail()
        records = [r for r in self._records() if r["iteration"] <= iteration]
        assert [r["iteration"] for r in records] == list(range(1, iteration + 1)), self._log_tail()
        return [r["loss"] for r in records]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def _records(self) -> list[dict]:
        return [json.loads(line) for line in self._lines()]

    def _last_iteration(self) -> int:
        lines = self._lines()
        return json.loads(lines[-1])["iteration"] if lines else 0

    def _lines(self) -> list[str]:
        """The metrics lines written so far; a last one still being written (no newline yet) is left out."""
        metrics = self.run_dir / "pretrain" / "metrics.jsonl"
        return metrics.read_text().split("\n")[:-1] if metrics.exists() else []

    def _log_tail(self) -> str:
        return Path(self.log.name).read_text()[-3000:]


@pytest.fixture(scope="module")
def reference(packed_data, tmp_path_factory):  # noqa: F811
    """The run of ITERS iterations the signalled jobs are compared with; it trains beside them from the start. It saves
    only at its end: its checkpoints are never read, and saves do not change the losses (the jobs save every
    SAVE_INTERVAL and their curves equal this one)."""
    run = Reference(packed_data, tmp_path_factory.mktemp("reference"), ITERS, save_interval=ITERS)
    yield run
    run.close()


def test_usr1_to_the_batch_shell_saves_requeues_and_resumes_the_same_curve(slurm, packed_data, tmp_path,  # noqa: F811
                                                                          reference):
    job = Job(slurm, _config(packed_data, tmp_path, "usr1", ITERS))
    first = job.wait_for_checkpoint()
    job.scancel("--batch", "--signal=USR1")
    job.start_requeued()
    assert job.wait_until_ended() == "COMPLETED", job.log()[-4000:]
    stopped = _stopped_at(job)
    assert first < stopped < ITERS and f"resuming at iteration {stopped} " in job.log(), job.log()[-4000:]
    assert "SIGUSR1: the training saves a checkpoint" in job.log() and "restart 1:" in job.log()
    assert losses(job.run_dir) == reference.curve()


def test_usr1_requeues_a_chain_job_in_place_and_the_job_after_it_waits_for_it(slurm, packed_data, tmp_path,  # noqa: F811
                                                                            reference):
    """The chain of a pretrain-only config: the pretrain job and the report job after it (afterok). A requeued
    pretrain job keeps its id, so the report job keeps waiting for it, then runs once it has completed."""
    job = Job(slurm, _config(packed_data, tmp_path, "chain", ITERS), chain=True)
    report = job.chain["report"]["job_id"]
    job.wait_for_checkpoint()
    job.scancel("--batch", "--signal=USR1")
    job.start_requeued()
    waiting = job.info(report)
    assert (waiting["JobState"], waiting["Reason"], waiting["Dependency"]) == ("PENDING", "Dependency",
                                                                               f"afterok:{job.id}(unfulfilled)")
    assert job.wait_until_ended() == "COMPLETED", job.log()[-4000:]
    job.wait(lambda: job.info(report).get("JobState") in ENDED, "the report job", every=0.5)
    assert job.info(report)["JobState"] == "COMPLETED" and (job.run_dir / "report" / "report.md").is_file()
    record = json.loads((job.run_dir / "pipeline.json").read_text())["stages"]["pretrain"]
    assert (record["status"], record["reason"]) == ("done", "no record of a previous run")
    status = subprocess.run([sys.executable, "-m", "factory.launch", "status", "--config",
                             str(tmp_path / "chain.yaml")], cwd=ROOT, env=job.env, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(rf"^pretrain +{job.id} +COMPLETED +done +1 +\S+ +{ITERS} \(", status.stdout, re.M), status.stdout
    assert f"resuming at iteration {_stopped_at(job)} " in job.log(), job.log()[-4000:]
    assert losses(job.run_dir) == reference.curve()


def test_time_limit_signal_saves_requeues_and_resumes_the_same_curve(slurm, packed_data, tmp_path):  # noqa: F811
    """--time=3 with --signal=B:USR1@100: Slurm signals the batch shell at its first periodic check (every 30 s)
    at which at most 100 s + that period remain. The limit is lowered to two minutes once the training has started
    (a signal before that would be lost), which puts the job inside that window at once: the signal comes 0-30 s
    into the training, over a minute before the limit (a one-minute limit from the submission signalled 20-50 s
    after the start, so the job needed 5000 iterations, and the test ~118 CPU-s instead of ~83). The job
    completes every iteration, each recorded once, and its losses equal an uninterrupted run's from the first
    iteration through PAST_RESUME iterations past the resume point. That run starts once the job trains and is
    stopped there: training it to the end (thousands of iterations more) would double the test's CPU time, comparing
    only later steps of a state that the compared ones already show to be restored."""
    job = Job(slurm, _config(packed_data, tmp_path, "timelimit", TIME_LIMIT_ITERS, TIME_LIMIT_SAVE_INTERVAL,
                             time="00:03:00", signal_seconds_before_timeout=100))
    metrics = job.run_dir / "pretrain" / "metrics.jsonl"
    # the reference starts once the job trains: starting beside it would slow the job's start
    job.wait(lambda: metrics.exists() or job.state() in ENDED, "the first iteration")
    job.update("timelimit=2")
    reference = Reference(packed_data, tmp_path, TIME_LIMIT_ITERS, TIME_LIMIT_SAVE_INTERVAL)
    try:
        job.start_requeued("timelimit=10")  # the rest of the run fits in one allocation
        stopped = _stopped_at(job)
        compared = min(stopped + PAST_RESUME, TIME_LIMIT_ITERS)
        expected = reference.curve_through(compared)
    finally:
        reference.close()
    assert job.wait_until_ended() == "COMPLETED", job.log()[-4000:]
    assert _stopped_at(job) == stopped  # the one stop of the whole job (the resumed run was not stopped)
    assert 0 < stopped < TIME_LIMIT_ITERS and f"resuming at iteration {stopped} " in job.log(), job.log()[-4000:]
    assert "SIGUSR1: the training saves a checkpoint" in job.log() and "restart 1:" in job.log()
    assert _iterations(job) == list(range(1, TIME_LIMIT_ITERS + 1))
    assert losses(job.run_dir)[:compared] == expected


@pytest.mark.parametrize("options,state", [((), "CANCELLED"), (("--batch", "--signal=TERM"), "COMPLETED")],
                         ids=["scancel", "scancel-batch-term"])
def test_cancel_saves_a_checkpoint_and_does_not_requeue(slurm, packed_data, tmp_path, options, state):  # noqa: F811
    job = Job(slurm, _config(packed_data, tmp_path, "cancel", ITERS))
    first = job.wait_for_checkpoint()
    job.scancel(*options)
    assert job.wait_until_ended() == state, job.log()[-4000:]
    stopped = _stopped_at(job)
    assert first < stopped < ITERS and job.checkpoint() == stopped, job.log()[-4000:]
    assert job.info()["Restarts"] == "0" and job.info()["ExitCode"] == "0:0" and "requeueing" not in job.log()


def test_two_jobs_on_one_node_both_finish(slurm, packed_data, tmp_path):  # noqa: F811
    jobs = [Job(slurm, _config(packed_data, tmp_path, name, 100)) for name in ("first", "second")]
    jobs[0].wait(lambda: all(j.state() == "RUNNING" for j in jobs), "both jobs running at once")
    assert [j.wait_until_ended() for j in jobs] == ["COMPLETED", "COMPLETED"], jobs[1].log()[-4000:]
    assert [j.checkpoint() for j in jobs] == [100, 100]
    ports = {re.search(r"rendezvous \S+:(\d+)", j.log()).group(1) for j in jobs}
    assert len(ports) == 2, ports


def test_sigkill_of_a_worker_restarts_it_from_the_last_checkpoint(slurm, packed_data, tmp_path,  # noqa: F811
                                                                 reference):
    job = Job(slurm, _config(packed_data, tmp_path, "sigkill", ITERS))
    first = job.wait_for_checkpoint()
    metrics = job.run_dir / "pretrain" / "metrics.jsonl"
    job.wait(lambda: len(metrics.read_text().splitlines()) >= first + 5, "steps past the checkpoint")
    psutil.Process(job.worker_pid()).send_signal(signal.SIGKILL)  # in the middle of a step
    last = job.checkpoint()
    assert job.wait_until_ended() == "COMPLETED", job.log()[-4000:]
    assert f"resuming at iteration {last} " in job.log() and job.info()["Restarts"] == "0", job.log()[-4000:]
    assert losses(job.run_dir) == reference.curve()
