"""Fault tolerance: hang watchdog, slowdown detector, planned restart, SIGKILL in the middle of a save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from factory.runner import run_stage
from factory.registry import STAGES
from factory.train import checkpoint as ckpt
from factory.train.control import PlannedRestart
from factory.train.fault import EXIT_HUNG, EXIT_RESTART, SlowdownDetector
from tests.train.conftest import losses, train_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_watchdog_dumps_stacks_and_exits_on_a_hang():
    code = textwrap.dedent("""
        import time
        from factory.train.fault import Watchdog
        def stuck_in_a_collective():
            time.sleep(60)
        Watchdog(timeout_s=0.5, poll_s=0.1).start()
        stuck_in_a_collective()
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_HUNG
    assert "no training step finished" in proc.stderr and "stuck_in_a_collective" in proc.stderr


def test_slowdown_detector_needs_a_sustained_drop():
    d = SlowdownDetector(drop=0.2, window_s=60)
    assert not any(d.update(1000.0, t) for t in range(0, 300, 30))
    assert not d.update(700.0, 300) and not d.update(1000.0, 330)  # one slow window, then recovered
    assert not d.update(750.0, 360) and not d.update(760.0, 390)
    assert d.update(740.0, 420)  # 60 s below 800 tokens/s
    assert d.baseline == pytest.approx(1000.0)


def test_planned_restart_saves_then_exits_75(packed_data, tmp_path):
    cfg = train_config(packed_data, tmp_path, train_iters=4, fault={"restart_every_hours": 1e-9})
    with pytest.raises(PlannedRestart, match="planned restart") as err:
        run_stage(STAGES["pretrain"], cfg)
    assert err.value.exit_code == EXIT_RESTART
    assert ckpt.latest_iteration(tmp_path / "pretrain" / "checkpoints") == 1


def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(packed_data, tmp_path):
    straight = train_config(packed_data, tmp_path / "straight", train_iters=6)
    run_stage(STAGES["pretrain"], straight)
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(train_config(packed_data, tmp_path / "killed", train_iters=6).to_dict()))
    # The real save of iteration 4 completes its files and integrity record, then the process is killed before
    # the rename.
    script = tmp_path / "kill_in_save.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        from factory.train import checkpoint_root
        real_publish = checkpoint_root.publish
        def die_before_publishing_4(root, iteration):
            if iteration == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            real_publish(root, iteration)
        checkpoint_root.publish = die_before_publishing_4
        from factory.stage import main
        if __name__ == "__main__":
            sys.exit(main(["pretrain", "--config", {str(config)!r}]))
    """))
    log = tmp_path / "killed.log"
    with log.open("w") as out:  # a file, not a pipe: nothing left behind can hold it open
        proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=ENV, stdout=out, stderr=out,
                                start_new_session=True)
        try:
            proc.wait(timeout=300)
        finally:
            _kill_group(proc.pid)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    root = tmp_path / "killed" / "pretrain" / "checkpoints"
    assert ckpt.latest_iteration(root) == 2 and (root / ".iter_0000004.partial").is_dir()
    assert ckpt.read_info(root).iteration == 2
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "killed", train_iters=6))
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    assert not (root / ".iter_0000004.partial").exists()
    assert json.loads((root.parent / "manifest.json").read_text())["metrics"]["steps"] == 6
