"""A real one-node Slurm for the tests: Debian's slurmctld + slurmd + munge, run in a private folder.

`LocalSlurm(folder).start()` writes a munge key and a slurm.conf (one node `localhost`, 2 CPUs,
proctrack/linuxproc, JobRequeue=1, free ports, a random first job id, every state/log/pid file inside `folder`), starts
munged, slurmctld and slurmd in the foreground as children of this process, and waits for the node
to be idle. The conf sets `batch_sched_delay=0`: slurmctld would otherwise hold a submitted, released or requeued
batch job's scheduling up to 3 s (the default), which the tests' jobs and chains would wait through each time (one
`sbatch --wrap true` to its end ~3 -> ~1 s, a chain of four ~11 -> ~4 s on the 2-core build machine).
`stop()` cancels every job, waits for their processes to end, then stops the daemons by
the PIDs it started (SIGTERM, then SIGKILL). Clients find the cluster through `env` (SLURM_CONF).
`install()` puts the Debian packages in place with apt-get when they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "scancel", "scontrol", "squeue", "sinfo")
PACKAGE_PID_FILES = ("/run/munge/munged.pid", "/run/slurmctld.pid", "/run/slurmd.pid")
"""Where the packages' own services write their PIDs, should an install start them."""
PR_SET_PDEATHSIG = 1
KILL_WAIT = 30
"""Seconds between the SIGTERM of a cancelled or timed-out job and its SIGKILL (the save window)."""
JOB_ID_SPAN = 20000
"""The factory's sbatch scripts derive a job's rendezvous port from its id modulo this (factory/launch/slurm.py):
each cluster starts its job ids at a random point of the span, so that two clusters on one machine (two test runs
at once) do not hand out the same ids and ports."""
CONF = """\
ClusterName=factorytest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/slurmd
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
JobRequeue=1
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
KillWait={kill_wait}
FirstJobId={first_job_id}
InactiveLimit=0
MinJobAge=600
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(RuntimeError):
    """The Slurm packages are missing and could not be installed."""


def install() -> None:
    """apt-get install the packages when a daemon or client is missing (`apt-get update` only if needed)."""
    if all(Path(d).exists() for d in DAEMONS) and all(shutil.which(c) for c in CLIENTS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{', '.join(PACKAGES)} are not installed, and installing them needs "
                               "apt-get as root")
    running = {pid_file: _pid_in(pid_file) for pid_file in PACKAGE_PID_FILES}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another test process (a pytest-xdist worker) may be installing
    command = ["apt-get", *wait, "install", "-y", "--no-install-recommends", *PACKAGES]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        subprocess.run(["apt-get", *wait, "update"], env=env, capture_output=True, text=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    _stop_started_services(running)
    if done.returncode:
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-500:]}")


def _pid_in(pid_file: str) -> int | None:
    try:
        return int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_started_services(before: dict[str, int | None]) -> None:
    """A package's install script may start its service; stop those it started, by their PID files."""
    for pid_file, old in before.items():
        pid = _pid_in(pid_file)
        if pid is not None and pid != old:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _die_with_parent() -> None:
    """In the daemon before exec: SIGTERM when the process that started it dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports with nothing listening on them (all held open while they are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalSlurm:
    """munged, slurmctld and slurmd for one node, owned by this process; see the module docstring."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen] = []

    def start(self, timeout: float = 60) -> "LocalSlurm":
        for sub in ("munge", "ctld", "slurmd", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(CONF.format(root=self.root, ctld_port=ctld_port, slurmd_port=slurmd_port,
                                         kill_wait=KILL_WAIT, first_job_id=random.randrange(1, JOB_ID_SPAN)))
        try:
            self._daemon(["/usr/sbin/munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                          f"--key-file={key}", f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                          f"--seed-file={munge}/munged.seed"])
            self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged did not open its socket")
            self._daemon(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._run("sinfo", "-h").returncode == 0, timeout, "slurmctld did not answer")
            self._daemon(["/usr/sbin/slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait(lambda: self._run("sinfo", "-h", "-o", "%t").stdout.strip() == "idle", timeout,
                       "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 3 * KILL_WAIT) -> None:
        """Cancel every job, wait for them to end, then stop the daemons this object started."""
        if self.daemons and all(d.poll() is None for d in self.daemons):
            self._run("scancel", "--full", "--user", "root")
            try:
                self._wait(lambda: not self.running_steps() and not self._run("squeue", "-h").stdout.strip(),
                           timeout, "jobs still running")
            except TimeoutError:
                pass
        for daemon in reversed(self.daemons):
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self.daemons.clear()

    @contextlib.contextmanager
    def partition_down(self) -> Iterator[None]:
        """The partition accepts jobs but starts none inside the block (`State=DOWN`); it is up again after."""
        self._run_checked("scontrol", "update", "partitionname=debug", "state=down")
        try:
            yield
        finally:
            self._run_checked("scontrol", "update", "partitionname=debug", "state=up")

    def running_steps(self) -> list[Path]:
        """Sockets of the job steps slurmd's step daemons still serve (one per running step)."""
        return [p for p in (self.root / "slurmd").glob("*") if p.is_socket()]

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _daemon(self, command: list[str]) -> None:
        with open(self.root / "log" / f"{Path(command[0]).name}.out", "w") as out:
            self.daemons.append(subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                                 preexec_fn=_die_with_parent))

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True)

    def _run_checked(self, *command: str) -> None:
        done = self._run(*command)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    raise RuntimeError(f"{daemon.args[0]} exited ({daemon.returncode}); see {self.root}/log")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} within {timeout:.0f}s; see {self.root}/log")
