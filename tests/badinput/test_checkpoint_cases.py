"""Training checkpoints under faults: SIGKILL at every step of a save, damaged or missing iterations and records,
a full disk while saving, a damaged tokenizer. Each ends in an intact checkpoint and the losses of a run without
the fault, or in one line naming the file."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from factory import stage
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from factory.train import integrity
from tests.badinput.conftest import assert_one_clear_line, run_main
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 - packed_data is a fixture

ROOT = Path(__file__).resolve().parents[2]
# One LR schedule for every length, so a run stopped at 4 and continued to 6 is the straight 6-iteration run.
SCHEDULE = {"decay_iters": 6}
CHECKPOINT = {"save_interval": 1, "keep_last": 2}


def _config(packed: Path, run_dir: Path, train_iters: int, **train):
    return train_config(packed, run_dir, train_iters=train_iters, schedule=SCHEDULE, checkpoint=CHECKPOINT, **train)


def _root(run_dir: Path) -> Path:
    return run_dir / "pretrain" / "checkpoints"


def _shard(folder: Path) -> Path:
    return max(folder.glob("*.distcp"), key=lambda p: p.stat().st_size)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "pretrain" / "manifest.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def straight(packed_data, tmp_path_factory) -> Path:  # noqa: F811
    """A 6-iteration run without faults: iterations 5 and 6 kept."""
    run_dir = tmp_path_factory.mktemp("straight")
    run_stage(STAGES["pretrain"], _config(packed_data, run_dir, 6))
    return run_dir


@pytest.fixture(scope="module")
def damaged_at_4(packed_data, tmp_path_factory) -> Path:  # noqa: F811
    """A run stopped at 4 whose iteration 4 was truncated: continuing it falls back to 3 and saves 4 again."""
    run_dir = tmp_path_factory.mktemp("damaged")
    run_stage(STAGES["pretrain"], _config(packed_data, run_dir, 4))
    shard = _shard(ckpt.iteration_dir(_root(run_dir), 4))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _assert_same_end(run_dir: Path, straight: Path) -> None:
    """The losses, checkpoint folder and committed iteration of the straight run; the last iteration verifies."""
    assert losses(run_dir) == losses(straight)
    assert sorted(os.listdir(_root(run_dir))) == sorted(os.listdir(_root(straight)))
    assert ckpt.latest_iteration(_root(run_dir)) == 6
    assert integrity.problems(ckpt.iteration_dir(_root(run_dir), 6)) == []


# ---- SIGKILL at each step boundary of a save: (the call the kill follows, the path that call names), and the
# iteration the rerun resumes from. The killed run resumes at 3 and first saves 4 over the damaged 4, which
# exercises the replacement of an existing iteration; its save of 5 is a first save of 5 and prunes 3
# (keep_last=2). A 5 left in place without the tracker is saved again (replaced) by the rerun.
KILLS = {
    "files written": ("write_all", ".iter_0000004.partial", 3),
    "record written": ("record", ".iter_0000004.partial", 3),
    "old copy moved aside": ("replace", ".iter_0000004.old", 3),
    "new copy moved in": ("replace", "iter_0000004", 4),
    "tracker moved": ("replace", ckpt.TRACKER, 4),
    "old copy removed": ("rmtree", ".iter_0000004.old", 4),
    "new iteration moved in": ("replace", "iter_0000005", 4),
    "pruned iteration moved aside": ("replace", ".iter_0000003.pruned", 5),
    "pruned iteration removed": ("rmtree", ".iter_0000003.pruned", 5),
}
KILLER = textwrap.dedent("""
    import json, os, shutil, signal, sys, traceback
    from pathlib import Path

    # What a pretrain run imports, once: each run below is a fork of this process, a process of its own that
    # SIGKILLs itself, without paying the interpreter's start-up again.
    import megatron.core.datasets.gpt_dataset, megatron.core.dist_checkpointing, megatron.core.distributed
    import megatron.core.models.gpt, megatron.core.optimizer, megatron.core.pipeline_parallel, torch
    from factory.stage import main
    from factory.train import checkpoint_writer, integrity

    def then_die(real, path_of, call, target):
        def wrapped(*args, **kwargs):
            path = Path(path_of(*args, **kwargs))
            existed = path.exists()
            result = real(*args, **kwargs)
            if path.name == target and (existed or call != "rmtree"):  # a removal that removed something
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped

    def run_until(call, target, config):
        if call == "write_all":  # a rank's files, each bucket a file of the folder
            checkpoint_writer.write_all = then_die(checkpoint_writer.write_all,
                                                   lambda _, buckets, q: Path(buckets[0][0]).parent, call, target)
        elif call == "record":
            integrity.record = then_die(integrity.record, lambda folder, *a: folder, call, target)
        elif call == "replace":
            os.replace = then_die(os.replace, lambda src, dst, *a, **k: dst, call, target)
        else:
            shutil.rmtree = then_die(shutil.rmtree, lambda path, *a, **k: path, call, target)
        return main(["pretrain", "--config", config])

    runs, results = json.loads(sys.argv[1]), {}
    for name, call, target, config, log in runs:
        pid = os.fork()
        if pid == 0:
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1), os.dup2(out, 2)
            try:
                code = run_until(call, target, config)
            except BaseException:  # the child never goes back into the loop
                traceback.print_exc()
                code = 1
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
        results[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    Path(sys.argv[2]).write_text(json.dumps(results))
""")


@pytest.fixture(scope="module")
def killed(damaged_at_4, packed_data, tmp_path_factory) -> dict[str, tuple[Path, int, Path]]:  # noqa: F811
    """For each boundary of KILLS: a copy of `damaged_at_4` continued to 6 by a run that SIGKILLs itself right
    after that step (KILLER, one run after another); its run folder, exit code and log."""
    root = tmp_path_factory.mktemp("killed")
    runs = []
    for i, (boundary, (call, target, _)) in enumerate(KILLS.items()):
        run_dir = _copy(damaged_at_4, root / str(i))
        config = root / str(i) / "run.yaml"
        config.write_text(yaml.safe_dump(_config(packed_data, run_dir, 6).to_dict()))
        runs.append((boundary, call, target, str(config), str(root / str(i) / "killed.log")))
    codes = root / "exit-codes.json"
    with (root / "killer.log").open("w") as out:  # a file, not a pipe: nothing left behind can hold it open
        proc = subprocess.Popen([sys.executable, "-c", KILLER, json.dumps(runs), str(codes)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                                stdout=out, stderr=out, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0, (root / "killer.log").read_text()[-3000:]
    exit_codes = json.loads(codes.read_text())
    return {name: (Path(config).parent / "run", exit_codes[name], Path(log)) for name, _, _, config, log in runs}


@pytest.mark.parametrize("boundary", list(KILLS))
def test_sigkill_at_each_step_of_a_save_loses_nothing(boundary, killed, straight, packed_data):  # noqa: F811
    run_dir, exit_code, log = killed[boundary]
    assert exit_code == -signal.SIGKILL, log.read_text()[-3000:]
    run_stage(STAGES["pretrain"], _config(packed_data, run_dir, 6))
    assert _metrics(run_dir)["steps_this_run"] == 6 - KILLS[boundary][2]
    _assert_same_end(run_dir, straight)


# ---- A damaged or missing final iteration is trained again, never "nothing to do".
def _empty(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()


def _truncate(folder: Path) -> None:
    with open(_shard(folder), "r+b") as f:
        f.truncate(100)


def _flip(folder: Path) -> None:
    shard = _shard(folder)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_empty, _truncate, _flip, shutil.rmtree], ids=["emptied", "truncated",
                                                                                  "flipped", "removed"])
def test_a_damaged_final_iteration_is_trained_again(damage, straight, packed_data, tmp_path, caplog):  # noqa: F811
    run_dir = _copy(straight, tmp_path)
    final = ckpt.iteration_dir(_root(run_dir), 6)
    damage(final)
    run_stage(STAGES["pretrain"], _config(packed_data, run_dir, 6))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if damage is shutil.rmtree:  # the tracker names a missing folder
        assert any(f"names iteration 6, but {final} is missing; using iteration 5" in w for w in warned), warned
    else:
        assert any(w.startswith(f"checkpoint: {final} is damaged (") for w in warned), warned
    assert _metrics(run_dir)["steps_this_run"] == 1  # resumed at 5
    _assert_same_end(run_dir, straight)


def test_a_missing_record_is_a_warning_naming_the_folder(straight, packed_data, tmp_path, caplog):  # noqa: F811
    run_dir = _copy(straight, tmp_path)
    final = ckpt.iteration_dir(_root(run_dir), 6)
    (final / integrity.INTEGRITY).unlink()
    _flip(final)  # undetectable without the record: the warning is all there is
    run_stage(STAGES["pretrain"], _config(packed_data, run_dir, 6))
    assert f"{final} has no integrity.json" in caplog.text


# ---- One line naming the file.
def test_a_record_entry_without_bytes_names_the_record(straight, packed_data, tmp_path, capsys):  # noqa: F811
    run_dir = _copy(straight, tmp_path)
    record = ckpt.iteration_dir(_root(run_dir), 6) / integrity.INTEGRITY
    content = json.loads(record.read_text())
    del next(iter(content["files"].values()))["bytes"]
    record.write_text(json.dumps(content))
    config = tmp_path / "cpt.yaml"
    cpt = train_config(packed_data, tmp_path / "cpt-run", stage="cpt", train_iters=2, init_from=str(record.parent))
    config.write_text(yaml.safe_dump(cpt.to_dict()))
    code, err = run_main(capsys, stage.main, ["cpt", "--config", str(config)])
    assert_one_clear_line(code, err, f"{record}: unreadable integrity record (the entry of ")
    assert not (tmp_path / "cpt-run" / "cpt" / "checkpoints").exists()


def _cli(argv: list[str], **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.stage", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, **popen)


def test_a_save_over_the_file_size_limit_names_the_folder(straight, packed_data, tmp_path):  # noqa: F811
    """`ulimit -f` below one checkpoint file: the save of 7 fails; iteration 6 stays committed and intact."""
    run_dir = _copy(straight, tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(packed_data, run_dir, 7).to_dict()))
    limit = _shard(ckpt.iteration_dir(_root(run_dir), 6)).stat().st_size // 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _cli(["pretrain", "--config", str(config)], preexec_fn=limit_file_size)
    partial = _root(run_dir) / ".iter_0000007.partial"
    assert_one_clear_line(proc.returncode, proc.stderr, f"checkpoint iteration 7: writing {partial}: File too large")
    assert sorted(os.listdir(_root(run_dir))) == sorted(os.listdir(_root(straight)))
    assert ckpt.latest_iteration(_root(run_dir)) == 6
    assert integrity.problems(ckpt.iteration_dir(_root(run_dir), 6)) == []


def test_a_truncated_tokenizer_names_the_file(packed_data, tmp_path, capsys):  # noqa: F811
    tokenizer = tmp_path / "tokenizer" / "tokenizer.model"
    tokenizer.parent.mkdir()
    tokenizer.write_bytes((packed_data / "tokenizer" / "tokenizer.model").read_bytes()[:3000])
    config = tmp_path / "run.yaml"
    run_dir = tmp_path / "run"
    config.write_text(yaml.safe_dump(_config(packed_data, run_dir, 2, tokenizer_dir=str(tokenizer.parent)).to_dict()))
    code, err = run_main(capsys, stage.main, ["pretrain", "--config", str(config)])
    assert_one_clear_line(code, err, f"pretrain.tokenizer_dir: cannot use tokenizer {tokenizer}: ")
    assert not _root(run_dir).exists()
