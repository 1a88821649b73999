"""Strict parsing through the CLIs: every file the factory reads is parsed strictly, a bad one is one line
naming file:line (or the key) and what was expected, exit != 0, no traceback, nothing partial written, and
rejected records are counted, never silently dropped. One class of input per test, over every reader of it."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from factory import stage
from factory.launch.__main__ import main as launch_main
from tests.badinput.conftest import DEMO, SENTENCE, assert_one_clear_line, run_main, snapshot
from tests.convert.conftest import write_hf_model
from tests.posttrain.conftest import llama_dir, tokenizer_dir  # noqa: F401 (fixtures)
from tests.train.conftest import packed_data, train_config  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [f"{SENTENCE}{i}番目の文書です。" for i in range(400)]


def _records(docs: list[str]) -> bytes:
    return "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")


def _write_input(folder: Path, kind: str, docs: list[str], damaged: bool = False) -> Path:
    """`docs` as one input of `kind` (every format the records reader accepts); `damaged`: cut short or
    corrupted the way a copy that died half-way leaves it."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / {"jsonl": "in.jsonl", "json": "in.json", "jsonl.gz": "in.jsonl.gz", "txt": "in.txt",
                     "txt.gz": "in.txt.gz", "parquet": "in.parquet", "hf": "in_ds"}[kind]
    text = "".join(d + "\n" for d in docs).encode("utf-8")
    if kind in ("jsonl", "json"):
        path.write_bytes(_records(docs))
    elif kind.endswith(".gz"):
        path.write_bytes(gzip.compress(_records(docs) if kind.startswith("jsonl") else text))
    elif kind == "txt":
        path.write_bytes(text)
    elif kind == "parquet":
        pq.write_table(pa.table({"text": docs}), path, row_group_size=50)
    else:
        datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(path))
    if damaged:
        target = next(path.glob("*.arrow")) if path.is_dir() else path
        data = bytearray(target.read_bytes())
        if kind == "parquet":  # a damaged row group; the footer still says where each one is
            data[len(data) // 2:len(data) // 2 + 2048] = bytes(2048)
        else:
            del data[len(data) // 2:]
        target.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("tok")
    (folder / "train.txt").write_text("\n".join(DOCS[:50]), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(folder / "train.txt"), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=400, model_type="bpe", hard_vocab_limit=False,
                                   user_defined_symbols=["<EOD>"], byte_fallback=True, minloglevel=2)
    return folder


def _stage_config(folder: Path, section: str, body: dict, tokenizer: Path | None = None) -> Path:
    config = {"run": {"name": "parse", "dir": str(folder / "run")},
              "runtime": {"device": "cpu", "precision": "fp32", "seed": 1}, section: body}
    if tokenizer is not None:
        config[section]["tokenizer_dir"] = str(tokenizer)
    path = folder / f"{section}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _data(folder: Path, source: Path, **extra) -> list[str]:
    body = {"inputs": [{"path": str(source)}], "text_unit": "line", "num_workers": 1,
            "dedup": {"exact": False, "near": False}, **extra}
    return ["data", "--config", str(_stage_config(folder, "data", body))]


def _pack(folder: Path, source: Path, tokenizer: Path) -> list[str]:
    body = {"datasets": [{"name": "docs", "path": str(source)}], "num_workers": 1}
    return ["pack", "--config", str(_stage_config(folder, "pack", body, tokenizer))]


KINDS = ["jsonl.gz", "txt.gz", "parquet", "hf"]


@pytest.mark.parametrize("verb", ["data", "pack"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_input_cut_short_is_one_line_naming_the_file_in_data_and_pack(tmp_path, capsys, tokenizer_folder, kind,
                                                                          verb):
    source = _write_input(tmp_path, kind, DOCS, damaged=True)
    argv = _data(tmp_path, source) if verb == "data" else _pack(tmp_path, source, tokenizer_folder)
    before = snapshot(tmp_path)
    code, err = run_main(capsys, stage.main, argv)
    assert_one_clear_line(code, err, str(source))
    assert re.search(r"(unreadable after (line \d+|\d+ rows)|not a readable)", err), err
    assert snapshot(tmp_path) == before or not (tmp_path / "run" / verb).exists()
    assert not any((tmp_path / "run").rglob("*.jsonl")) and not any((tmp_path / "run").rglob("*.bin"))


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz"])
def test_a_byte_order_mark_loses_no_record_in_data_or_pack(tmp_path, capsys, tokenizer_folder, kind):
    source = _write_input(tmp_path, kind, DOCS[:40])
    raw = gzip.decompress(source.read_bytes()) if kind.endswith(".gz") else source.read_bytes()
    bom = b"\xef\xbb\xbf" + raw
    source.write_bytes(gzip.compress(bom) if kind.endswith(".gz") else bom)
    code, err = run_main(capsys, stage.main, _data(tmp_path, source, filters={"min_chars": 1}))
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())["metrics"]
    assert metrics["kept"] == 40 and metrics["rejected.malformed"] == 0
    code, err = run_main(capsys, stage.main, _pack(tmp_path, source, tokenizer_folder))
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "pack" / "manifest.json").read_text())["metrics"]["documents"] == 40


def _malformed(folder: Path, kind: str) -> tuple[Path, str, str]:
    """An input of `kind` whose record 3 is malformed; (path, its source, what the reader says)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = DOCS[:100]
    if kind in ("parquet", "hf"):
        texts = docs[:2] + [None] + docs[3:]
        path = folder / ("in.parquet" if kind == "parquet" else "in_ds")
        if kind == "parquet":
            pq.write_table(pa.table({"text": texts}), path)
        else:
            datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(path))
        return path, f"{path}#2", "'text' is NoneType, expected a string"
    if kind == "txt":
        path = folder / "in.txt"
        path.write_bytes(b"".join(d.encode() + b"\n" for d in docs[:2]) + b"\xff\xfe\n" +
                         b"".join(d.encode() + b"\n" for d in docs[3:]))
        return path, f"{path}:3", "not UTF-8"
    lines = _records(docs).splitlines(keepends=True)
    lines[2] = ('{"text": "%s", "text": "%s"}\n' % (docs[2], docs[2][:5])).encode() if kind == "jsonl" else \
        ('{"text": "%s", "score": NaN}\n' % docs[2]).encode()
    path = folder / ("in.jsonl" if kind == "jsonl" else "in.jsonl.gz")
    path.write_bytes(b"".join(lines) if kind == "jsonl" else gzip.compress(b"".join(lines)))
    return path, f"{path}:3", "key 'text' given twice" if kind == "jsonl" else "NaN is not a JSON number"


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "txt", "parquet", "hf"])
def test_a_malformed_record_is_counted_by_data_and_named_by_pack(tmp_path, capsys, tokenizer_folder, kind):
    """The same record is malformed to both stages: data counts it against max_error_rate (kept in
    rejected.jsonl with its file:line), pack, which has no budget, stops naming it."""
    source, where, why = _malformed(tmp_path, kind)
    code, err = run_main(capsys, stage.main, _data(tmp_path, source, max_error_rate=0.05, filters={"min_chars": 1}))
    assert code == 0, err
    rejected = [json.loads(line) for line in (tmp_path / "run" / "data" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["source"], r["reason"]) for r in rejected] == [(where, "encoding" if kind == "txt" else "malformed")]
    assert why in rejected[0]["detail"]
    shutil.rmtree(tmp_path / "run")
    code, err = run_main(capsys, stage.main, _data(tmp_path, source, max_error_rate=0.001))
    assert_one_clear_line(code, err, f"1 of 100 records malformed (1.0% > data.max_error_rate 0.1%); first: {where}")
    assert not (tmp_path / "run" / "data").exists()
    code, err = run_main(capsys, stage.main, _pack(tmp_path, source, tokenizer_folder))
    assert_one_clear_line(code, err, f"{where}: ")
    assert why in err and not (tmp_path / "run" / "pack").exists()


def test_a_config_key_given_twice_names_the_second_line(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text(f"run:\n  name: x\n  dir: {tmp_path / 'run'}\ndata:\n  inputs: [a.jsonl]\n"
                      "runtime:\n  device: cpu\ndata:\n  inputs: [b.jsonl]\n")
    code, err = run_main(capsys, stage.main, ["data", "--config", str(config)])
    assert code == 2
    assert_one_clear_line(code, err, f"{config}:8: invalid YAML: key 'data' given twice in one mapping (first at "
                                     "line 4")
    assert [p.name for p in tmp_path.iterdir()] == ["twice.yaml"]


class NullContent:
    """A chat endpoint that answers `"content": null` (as vLLM does when a reasoning parser takes every token)."""

    def complete(self, messages, max_tokens, temperature, seed):
        from factory.endpoints.server import Completion

        return Completion(None, 3, 0, "length")


class Echo:
    def complete(self, messages, max_tokens, temperature, seed):
        from factory.endpoints.server import Completion

        return Completion(f"答え: {messages[-1]['content'][:20]}", 3, 3, "stop")


def _synth(folder: Path, url: str) -> list[str]:
    seeds = folder / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"d{i}", "text": DOCS[i]}, ensure_ascii=False) + "\n"
                             for i in range(2)), encoding="utf-8")
    body = {"base_url": url, "model": "m", "personas": ["教師"], "tasks": ["qa"], "seeds": {"path": str(seeds)},
            "max_retries": 1, "backoff_seconds": 0.01, "concurrency": 1}
    return ["synth", "--config", str(_stage_config(folder, "synth", body))]


def test_a_null_completion_is_a_failed_attempt_and_a_recorded_one_is_done_again(tmp_path, capsys):
    from factory.endpoints.server import ChatServer

    with ChatServer(NullContent()).running() as url:
        code, err = run_main(capsys, stage.main, _synth(tmp_path, url))
    assert_one_clear_line(code, err, "failed after 2 attempts; last: response content is null, expected a string")
    samples = tmp_path / "run" / "synth" / "samples.jsonl"
    assert not samples.exists() or samples.read_text() == ""
    # A samples.jsonl written before responses were checked: one record holds `"text": null`.
    with ChatServer(Echo()).running() as url:
        assert run_main(capsys, stage.main, _synth(tmp_path, url))[0] == 0
        lines = samples.read_text(encoding="utf-8").splitlines()
        samples.write_text("\n".join([lines[0], json.dumps({**json.loads(lines[1]), "text": None})]) + "\n",
                           encoding="utf-8")
        code, err = run_main(capsys, stage.main, _synth(tmp_path, url))
    assert code == 0, err
    assert f"{samples}:2: 'text' is null" in " ".join(err.split())
    metrics = json.loads((tmp_path / "run" / "synth" / "manifest.json").read_text())["metrics"]
    assert metrics["samples_skipped_unusable"] == 1 and metrics["jobs_generated"] == 1
    texts = [json.loads(line)["text"] for line in samples.read_text(encoding="utf-8").splitlines()]
    assert texts[1] is None and all(isinstance(t, str) for t in (texts[0], texts[2]))  # nothing rewritten


def _sft(folder: Path, model: Path, rows: list, **section) -> list[str]:
    data = folder / "sft.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    body = {"model": str(model), "datasets": [{"path": str(data)}], "learning_rate": 1e-3, "max_steps": 1,
            "global_batch_size": 1, "max_length": 128, **section}
    return ["sft", "--config", str(_stage_config(folder, "sft", body))]


def _turns(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


GOOD = _turns(("user", "日本の首都は？"), ("assistant", "東京です。"))


@pytest.mark.parametrize(("row", "why"), [
    (_turns(("usr", "日本の首都は？"), ("assistant", "東京です。")), "message 0: role 'usr' is not one of"),
    (_turns(("user", "日本の首都は？"), ("assistant", "")), "message 1: empty assistant turn"),
    (_turns(("user", "a"), ("user", "b"), ("assistant", "c")), "message 1: user after a user turn"),
], ids=["misspelled-role", "empty-answers", "out-of-order"])
def test_sft_rows_that_break_a_rule_stop_the_stage_naming_the_first(tmp_path, capsys, llama_dir, row, why):  # noqa: F811
    code, err = run_main(capsys, stage.main, _sft(tmp_path, llama_dir, [GOOD, row, row]))
    assert_one_clear_line(code, err, f"{tmp_path / 'sft.jsonl'}:2: {why}")
    assert "2 of 3 rows break a rule" in err and "sft.max_error_rate 1.0%" in err
    assert not (tmp_path / "run" / "sft" / "hf").exists()


def test_sft_drops_rows_below_the_rate_and_records_them(tmp_path, capsys, llama_dir):  # noqa: F811
    bad = _turns(("usr", "q"), ("assistant", "a"))
    code, err = run_main(capsys, stage.main, _sft(tmp_path, llama_dir, [GOOD] * 9 + [bad], max_error_rate=0.2))
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "sft" / "hf" / "manifest.json").read_text())["metrics"]
    assert metrics["rows_rejected"] == 1 and metrics["rows_rejected.role"] == 1 and metrics["train_rows"] == 9


def test_sft_data_longer_than_max_length_names_the_dataset_and_its_shortest_row(tmp_path, capsys,
                                                                               llama_dir):  # noqa: F811
    long = _turns(("user", "日本の首都はどこですか？" * 30), ("assistant", "東京です。" * 30))
    code, err = run_main(capsys, stage.main, _sft(tmp_path, llama_dir, [long, long], max_length=16))
    assert_one_clear_line(code, err, f"{tmp_path / 'sft.jsonl'}: every row is longer than sft.max_length=16 tokens "
                                     "(the shortest has ")
    assert not (tmp_path / "run" / "sft" / "hf").exists()


def _import(folder: Path, hf_dir: Path) -> list[str]:
    return ["import", "--config", DEMO, f"run.dir={folder / 'run'}", f"hf_import.hf_dir={hf_dir}"]


def test_an_hf_config_without_a_required_key_names_the_file_and_key(tmp_path, capsys):
    src = write_hf_model(tmp_path / "src", "llama")
    config = json.loads((src / "config.json").read_text())
    del config["max_position_embeddings"]
    (src / "config.json").write_text(json.dumps(config))
    code, err = run_main(capsys, stage.main, _import(tmp_path, src))
    assert_one_clear_line(code, err, f"{src}/config.json: required key 'max_position_embeddings' is missing")
    assert not (tmp_path / "run" / "import").exists()


def test_an_int8_weight_names_the_tensor_its_dtype_and_the_supported_ones(tmp_path, capsys):
    from tests.convert.test_convert_errors import _retype

    src = write_hf_model(tmp_path / "src", "llama")
    _retype(src / "model.safetensors", "model.layers.1.self_attn.o_proj.weight", "I8")
    code, err = run_main(capsys, stage.main, _import(tmp_path, src))
    assert_one_clear_line(code, err, "tensor model.layers.1.self_attn.o_proj.weight has dtype I8, which cannot be "
                                     "read (supported: F32, BF16")
    assert not (tmp_path / "run" / "import" / "checkpoints").exists()


@pytest.mark.parametrize(("weights", "shown"), [([-1.0], "weight -1.0"), ([0], "weight 0"), ("NaN", "NaN")],
                         ids=["negative", "zero-sum", "nan"])
def test_a_hand_edited_blend_names_the_file_the_phase_and_the_weight(tmp_path, capsys, packed_data, weights,  # noqa: F811
                                                                     shown):
    blend = json.loads((packed_data / "pack" / "blend.json").read_text())
    edited = tmp_path / "blend.json"
    text = json.dumps({"phases": [{**blend["phases"][0], "weights": weights if weights != "NaN" else [0.5]}]})
    edited.write_text(text.replace("0.5", "NaN") if weights == "NaN" else text)
    raw = train_config(packed_data, tmp_path / "run", blend_file=str(edited)).to_dict()
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(raw))
    code, err = run_main(capsys, stage.main, ["pretrain", "--config", str(config)])
    assert_one_clear_line(code, err, str(edited))
    assert shown in err and ("phase 'main'" in err or weights == "NaN")
    assert not (tmp_path / "run" / "pretrain" / "checkpoints").exists()


def test_doctor_refuses_a_negative_time_budget_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "factory.doctor", "--minutes", "-5", "--out", str(tmp_path / "d")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_clear_line(proc.returncode, proc.stderr, "--minutes -5: expected a positive number of minutes")
    assert not (tmp_path / "d").exists()


def test_a_partition_name_with_a_space_is_refused_naming_the_key(tmp_path, capsys):
    code, err = run_main(capsys, launch_main, ["slurm", "data", "--config", DEMO, f"run.dir={tmp_path / 'run'}",
                                               "--partition", "gpu a100"])
    assert code == 2
    assert_one_clear_line(code, err, "launch.partition='gpu a100': a Slurm name cannot contain spaces")
    assert list(tmp_path.iterdir()) == []


def test_an_awkward_run_folder_reaches_sbatch_intact(tmp_path, slurm):
    """A run folder and job name with a space, `#`, quotes and `%`: the job runs the data stage and its log lands
    where the config says (sbatch cut the line at `#`, split it at the space and expanded `%` before)."""
    folder = tmp_path / 'a run #1 "q" 50%'
    folder.mkdir()
    source = _write_input(folder, "jsonl", DOCS[:20])
    config = _stage_config(folder, "data", {"inputs": [str(source)], "text_unit": "line", "num_workers": 1,
                                            "dedup": {"exact": False, "near": False}, "filters": {"min_chars": 1}})
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["launch"] = {"gpus_per_node": 0, "venv": str(ROOT / ".venv"), "job_name": "parse 'job' #2",
                     "time": "00:10:00", "signal_seconds_before_timeout": 30}
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    (folder / "run" / "logs").mkdir(parents=True)
    env = {k: v for k, v in slurm.env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-m", "factory.launch", "slurm", "data", "--config", str(config),
                           "--submit"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    job = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
    log = folder / "run" / "logs" / f"parse 'job' #2-{job}.out"
    deadline = time.time() + 240
    while time.time() < deadline and "COMPLETED" not in _job_state(slurm, job, env):
        time.sleep(0.5)
    assert "COMPLETED" in _job_state(slurm, job, env), (_job_state(slurm, job, env), os.listdir(folder / "run"))
    assert log.is_file(), sorted(str(p) for p in folder.rglob("*.out"))
    assert json.loads((folder / "run" / "data" / "manifest.json").read_text())["metrics"]["kept"] == 20


def _job_state(slurm, job: str, env: dict) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True).stdout
