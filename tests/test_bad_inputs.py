"""Bad inputs and I/O faults across the verbs, the pipeline and the launcher: each ends in one clear line that
names the offending key or path, an exit code != 0, and nothing new in the output location."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from factory import pipeline, stage
from factory.launch.__main__ import main as launch_main
from factory.errors import FactoryError

DEMO = "configs/demo-cpu.yaml"
SENTENCE = "東京は日本の首都であり、多くの人々が毎日電車で通勤している大きな都市です。"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """One tiny run folder shared by every case: a corpus, a data-stage config and the data stage's output."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "ja.txt").write_text("".join(f"{SENTENCE}{i}番目の文。\n" for i in range(40)), encoding="utf-8")
    config = {"run": {"name": "bad-inputs", "dir": str(root / "run")},
              "runtime": {"device": "cpu", "precision": "fp32", "seed": 1},
              "data": {"inputs": [{"path": str(root / "ja.txt")}], "text_unit": "line", "num_workers": 1}}
    (root / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert stage.main(["data", "--config", str(root / "data.yaml")]) == 0
    assert (root / "run" / "data" / "manifest.json").is_file()
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (hidden ones too) with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def assert_one_clear_line(code: int, stderr: str, names: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "stopped: "))]
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    assert names in errors[0], errors[0]


def run_main(capsys, main, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


# (verb, override, what the line must name): config values a user can get wrong, checked before anything runs.
CONFIG_CASES = [
    ("pretrain", "model.hidden_size=-1", "model.hidden_size"),
    ("pretrain", "model.seq_length=abc", "model.seq_length"),
    ("pretrain", "model.num_attention_heads=6", "num_attention_heads"),
    ("pretrain", "model.num_query_groups=3", "model.num_query_groups"),
    ("pretrain", "model.ffn_hidden_size=0", "model.ffn_hidden_size"),
    ("pretrain", "model.rotary_base=0", "model.rotary_base"),
    ("pretrain", "model.num_layers=0", "model.num_layers"),
    ("pretrain", "model.nosuch=1", "model.nosuch"),
    ("pretrain", "nosuch.key=1", "nosuch"),
    ("pretrain", "runtime.device=tpu", "runtime.device"),
    ("pretrain", "runtime.precision=fp8", "runtime.precision"),
    ("pretrain", "runtime.seed=x", "runtime.seed"),
    ("pretrain", "parallel.tensor=0", "parallel.tensor"),
    ("pretrain", "parallel.pipeline=3", "parallel.pipeline"),
    ("pretrain", "pretrain.train_iters=0", "pretrain.train_iters"),
    ("pretrain", "pretrain.micro_batch_size=3", "micro_batch_size"),
    ("pretrain", "pretrain.global_batch_size=0", "pretrain.global_batch_size"),
    ("pretrain", "pretrain.optimizer.lr=-1", "pretrain.optimizer.lr"),
    ("pretrain", "pretrain.schedule.style=nope", "pretrain.schedule.style"),
    ("pretrain", "pretrain.checkpoint.save_interval=-1", "pretrain.checkpoint.save_interval"),
    ("pretrain", "model.hidden_size", "model.hidden_size"),
    ("tokenizer", "tokenizer.model_type=wordpiece", "tokenizer.model_type"),
    ("tokenizer", "tokenizer.vocab_size=-5", "tokenizer.vocab_size"),
    ("data", "data.text_unit=para", "data.text_unit"),
    ("data", "data.inputs=[]", "data.inputs"),
    ("pack", "pack.num_workers=0", "pack.num_workers"),
    ("upcycle", "upcycle.num_experts=1", "upcycle.num_experts"),
    ("cpt", "cpt.train_iters=0", "cpt.train_iters"),
    ("sft", "run.dir=/nonexistent/run", "/nonexistent/run/export/hf"),
    ("dpo", "run.dir=/nonexistent/run", "/nonexistent/run"),
    ("eval", "run.dir=/nonexistent/run", "eval.data_dir"),
]


@pytest.mark.parametrize(("verb", "override", "names"), CONFIG_CASES, ids=[f"{v}:{o}" for v, o, _ in CONFIG_CASES])
def test_config_case(prepared, capsys, verb, override, names):
    before = snapshot(prepared)
    code, err = run_main(capsys, stage.main, [verb, "--config", DEMO, f"run.dir={prepared / 'run'}", override])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


def test_config_file_cases(prepared, capsys, tmp_path):
    """A missing config, a file that is not YAML, a YAML list, an empty file: each names the file."""
    not_yaml, listed, empty = tmp_path / "bad.yaml", tmp_path / "list.yaml", tmp_path / "empty.yaml"
    not_yaml.write_text("run: {name: x\nmodel: [\n")
    listed.write_text("- run\n- model\n")
    empty.write_text("")
    for path in (tmp_path / "missing.yaml", not_yaml, listed, empty):
        code, err = run_main(capsys, stage.main, ["data", "--config", str(path)])
        assert_one_clear_line(code, err, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty.yaml", "list.yaml"]


PIPELINE_CASES = [
    (["--only", "nosuch"], "nosuch"),
    (["--from", "nosuch"], "nosuch"),
    (["--fresh", "pretrain"], "pretrain"),
    (["runtime.seed=x"], "runtime.seed"),
    (["data.nosuch=1"], "data.nosuch"),
]


@pytest.mark.parametrize(("args", "names"), PIPELINE_CASES, ids=[" ".join(a) for a, _ in PIPELINE_CASES])
def test_pipeline_case(prepared, capsys, args, names):
    before = snapshot(prepared)
    code, err = run_main(capsys, pipeline.main, ["--config", str(prepared / "data.yaml"), "--no-report", *args])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


LAUNCH_CASES = [
    (["local", "pretrain", "model.hidden_size=-1"], "model.hidden_size"),
    (["local", "data", "data.nosuch=1"], "data.nosuch"),
    (["slurm", "pretrain", "parallel.tensor=0"], "parallel.tensor"),
    (["slurm", "pretrain", "launch.nosuch=1"], "launch.nosuch"),
]


@pytest.mark.parametrize(("args", "names"), LAUNCH_CASES, ids=[" ".join(a) for a, _ in LAUNCH_CASES])
def test_launch_case(prepared, capsys, args, names):
    before = snapshot(prepared)
    launcher, verb, override = args
    code, err = run_main(capsys, launch_main,
                         [launcher, verb, "--config", DEMO, f"run.dir={prepared / 'run'}", override])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


# ---- I/O faults: the output location is unusable, or fills up while the stage writes.

def data_stage(prepared: Path, *overrides: str) -> list[str]:
    return ["data", "--config", str(prepared / "data.yaml"), *overrides]


def test_output_dir_is_a_file(prepared, capsys, tmp_path):
    target = tmp_path / "kept-here"
    target.write_text("a user's file\n")
    code, err = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={target}"))
    assert_one_clear_line(code, err, f"data: {target}: is a file")
    assert target.read_text() == "a user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept-here"]


def test_output_dir_below_a_file(prepared, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={blocker}/out"))
    assert_one_clear_line(code, err, f"{blocker}: is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def _cli(argv: list[str], **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "factory.stage", *argv], capture_output=True, text=True,
                          env=env, **popen)


def test_disk_full_while_writing(prepared, tmp_path):
    """`ulimit -f`: the first write past the limit fails; the stage names the file and removes its temp."""
    out = tmp_path / "out"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = _cli(data_stage(prepared, f"data.output_dir={out}"), preexec_fn=limit_file_size)
    assert_one_clear_line(proc.returncode, proc.stderr, str(tmp_path))
    assert "File too large" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_unreadable_config(prepared, tmp_path):
    config = tmp_path / "secret.yaml"
    config.write_text((prepared / "data.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    os.chmod(config, 0)
    if os.getuid() == 0:
        proc = _cli(["data", "--config", str(config)], preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    else:
        proc = _cli(["data", "--config", str(config)])
    assert_one_clear_line(proc.returncode, proc.stderr, f"{tmp_path}")


@pytest.fixture
def open_folder():
    """A folder every user may enter and read (pytest's own are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


def test_output_dir_not_writable(prepared, open_folder):
    """A folder the user may not write (root runs the stage as `nobody`, whom the permission bits bind)."""
    (open_folder / "ja.txt").write_text((prepared / "ja.txt").read_text(encoding="utf-8"), encoding="utf-8")
    config = yaml.safe_load((prepared / "data.yaml").read_text(encoding="utf-8"))
    config["data"]["inputs"] = [{"path": str(open_folder / "ja.txt")}]
    (open_folder / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    locked = open_folder / "locked"
    locked.mkdir()
    if os.getuid() == 0:
        os.chmod(locked, 0o755)  # owned by root: nobody may not write it
        popen = {"preexec_fn": lambda: (os.setgid(65534), os.setuid(65534))}
    else:
        os.chmod(locked, 0o555)
        popen = {}
    try:
        proc = _cli(data_stage(open_folder, f"data.output_dir={locked}/out", f"run.dir={locked}/run"), **popen)
    finally:
        os.chmod(locked, 0o755)
    assert_one_clear_line(proc.returncode, proc.stderr, f"{locked}: not writable")
    assert list(locked.iterdir()) == []


def test_stale_temp_of_a_killed_run_is_removed(prepared, capsys, tmp_path):
    """A temp folder left by a dead process on this host is removed by the next run; a live one is kept."""
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".out.{host}-{dead.pid}-abc123.tmp"
    live = tmp_path / f".out.{host}-{os.getppid()}-def456.tmp"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "kept.jsonl").write_text("{}\n")
    code, _ = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={out}"))
    assert code == 0
    assert not stale.exists() and live.is_dir()
    assert (out / "manifest.json").is_file()


# ---- Post-training data and model folders: rows named by file line, degenerate pairs counted.

def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n"
                            for x in lines), encoding="utf-8")
    return path


GOOD_SFT = {"messages": [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"}]}
PAIR = {"prompt": "首都は？", "chosen": "東京です。", "rejected": "大阪です。"}
SAME = {"prompt": "首都は？", "chosen": "東京です。", "rejected": "東京です。"}

POSTTRAIN_CASES = [
    ("sft", [GOOD_SFT, GOOD_SFT, '{"messages": [}'], ":3: invalid JSON"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user", "content": "質問"}]}], ":2: no assistant turn"),
    ("sft", [GOOD_SFT, GOOD_SFT, GOOD_SFT, {"messages": "質問"}], ":4: expected a list of messages"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user"}]}], ":2: every message needs"),
    ("sft", [{"question": "q", "answer": "a"}], "columns found: question, answer"),
    ("sft", [], "empty dataset"),
    ("dpo", [SAME, SAME, SAME], "all 3 preference pairs are degenerate"),
    ("dpo", [{**PAIR, "chosen": ""}, {**PAIR, "rejected": ""}], "empty 'chosen'"),
    ("dpo", [PAIR, {**PAIR, "prompt": ""}], ":2: empty 'prompt'"),
    ("dpo", [GOOD_SFT], "expected: prompt+chosen+rejected"),
]


@pytest.mark.parametrize(("verb", "lines", "names"), POSTTRAIN_CASES, ids=[f"{v}:{n}" for v, _, n in POSTTRAIN_CASES])
def test_posttrain_data_case(tmp_path, verb, lines, names):
    from factory.posttrain.config import DatasetSpec
    from factory.posttrain.data import load_mixture

    path = _jsonl(tmp_path / "rows.jsonl", lines)
    with pytest.raises(FactoryError) as info:
        load_mixture([DatasetSpec(path=path)], verb, seed=0)
    assert len(info.value.lines()) == 1 and str(path) in str(info.value) and names in str(info.value), str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_degenerate_pairs_are_rejected_with_a_count(tmp_path, caplog):
    from factory.posttrain.config import DatasetSpec
    from factory.posttrain.data import load_mixture

    path = _jsonl(tmp_path / "pairs.jsonl", [PAIR, SAME, {**PAIR, "rejected": ""}, PAIR])
    dataset = load_mixture([DatasetSpec(path=path)], "dpo", seed=0)
    assert len(dataset) == 2 and all(row["chosen"] != row["rejected"] for row in dataset)
    assert f"rejected 2 of 4 degenerate pairs (first {path}:2: chosen equals rejected)" in caplog.text


EVAL_PROMPT_CASES = [
    ([{"prompt": "質問"}, {"prompt": 42}], ":2: 'prompt' must be a string, got int"),
    ([{"messages": "質問"}], ":1: 'messages' must be a list"),
    ([{"prompt": "a"}, {"prompt": "b"}, {"question": "c"}], ":3: needs 'prompt' or 'messages'; keys found: question"),
    ([], "empty"),
]


@pytest.mark.parametrize(("lines", "names"), EVAL_PROMPT_CASES, ids=[n for _, n in EVAL_PROMPT_CASES])
def test_eval_prompts_case(tmp_path, lines, names):
    from factory.posttrain.evaluate import read_prompts

    path = _jsonl(tmp_path / "prompts.jsonl", lines)
    with pytest.raises(FactoryError) as info:
        read_prompts(path)
    assert len(info.value.lines()) == 1 and f"{path}" in str(info.value) and names in str(info.value), str(info.value)


@pytest.fixture(scope="session")
def shard(tmp_path_factory) -> Path:
    """A two-tensor safetensors file."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("shard") / "model.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.ones(64, 64)}, str(path))
    return path


def test_truncated_config_json_names_the_file(tmp_path):
    from factory.convert.hf_import import read_hf_config

    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_si')
    with pytest.raises(FactoryError, match=f"^{tmp_path / 'config.json'}: not valid JSON"):
        read_hf_config(tmp_path)


@pytest.mark.parametrize("config_json", ['{"model_type": "llama", "hidden_si', None], ids=["truncated", "absent"])
def test_import_of_a_damaged_model_folder(prepared, capsys, tmp_path, config_json):
    """The import verb on a folder whose config.json is cut short or absent: one line naming it."""
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    if config_json is not None:
        (hf_dir / "config.json").write_text(config_json)
    before = snapshot(prepared)
    code, err = run_main(capsys, stage.main, ["import", "--config", DEMO, f"run.dir={prepared / 'run'}",
                                              f"hf_import.hf_dir={hf_dir}"])
    assert_one_clear_line(code, err, str(hf_dir / "config.json") if config_json else f"hf_dir={hf_dir}")
    assert snapshot(prepared) == before and [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_tokenizer_folder_without_a_vocabulary(tmp_path):
    from factory.convert import tokenizer_files

    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    with pytest.raises(FactoryError, match=f"^{tmp_path}: no tokenizer vocabulary"):
        tokenizer_files.read(tmp_path)


def test_truncated_index_names_the_file(tmp_path):
    from factory.convert.hf_io import INDEX, LazyReader

    (tmp_path / INDEX).write_text('{"weight_map": {"a": "model-0')
    with pytest.raises(FactoryError, match=f"^{tmp_path / INDEX}: not a safetensors index"):
        LazyReader(tmp_path)


@pytest.mark.parametrize("keep", [4, 200, 64 * 64 * 4 + 200], ids=["in-length", "in-header", "in-tensor-b"])
def test_truncated_shard_names_the_file(shard, tmp_path, keep):
    from factory.convert.hf_io import LazyReader

    damaged = tmp_path / "model.safetensors"
    damaged.write_bytes(shard.read_bytes()[:keep])
    with pytest.raises(FactoryError, match=f"^{damaged}: (not a safetensors file|truncated at tensor)"):
        reader = LazyReader(tmp_path)
        for name in reader.keys():
            reader.get(name)
