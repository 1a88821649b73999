"""The tokenizer stage end to end: config errors, empty input, atomic outputs, manifest, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import validate_config
from factory.errors import ConfigError, DataError
from factory.io import OWNER_FILE
from factory.runner import run_stage
from factory.registry import STAGES
from tests.tokenizer.conftest import tokenizer_config, train
from tokenizer.config import UNIGRAM_GGUF
from tokenizer.tokenizer_stage import OUTPUTS, plan

ROOT = Path(__file__).resolve().parents[2]


def test_missing_section_is_a_config_error():
    cfg = validate_config({"run": {"name": "t", "dir": "runs/t"}})
    with pytest.raises(ConfigError, match="no 'tokenizer' section"):
        plan(cfg)


def test_every_input_problem_is_reported_together(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n")
    inputs = [tmp_path / "missing.txt", tmp_path / "table.csv"]
    with pytest.raises(ConfigError) as info:  # section rules fail when the config loads, like every section's
        tokenizer_config(inputs, tmp_path / "out", vocab_size=10)
    assert [line.split(": ")[1].split(":")[0] for line in info.value.lines()] == ["tokenizer.vocab_size=10"]
    with pytest.raises(ConfigError) as info:  # inputs are checked when the stage plans
        plan(tokenizer_config(inputs, tmp_path / "out"))
    assert [line.split(":")[0] for line in info.value.lines()] == [
        f"tokenizer.inputs[0]={tmp_path / 'missing.txt'}", f"tokenizer.inputs[1]={tmp_path / 'table.csv'}"]
    with pytest.raises(ConfigError, match="tokenizer.inputs: empty"):
        plan(tokenizer_config([], tmp_path / "out"))


def test_empty_input_is_a_clear_error_and_leaves_no_output(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=f"tokenizer.inputs: no text in {empty}"):
        train([empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.txt"]


def test_failed_run_keeps_the_previous_output(trained, corpus, tmp_path):
    out, _ = trained()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="supports at most"):
        run_stage(STAGES["tokenizer"], tokenizer_config([corpus], out, vocab_size=100_000))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_outputs_manifest_and_no_leftover_training_text(corpus, tmp_path):
    out = tmp_path / "tok"
    manifest = run_stage(STAGES["tokenizer"], tokenizer_config([corpus], out))
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "manifest.json", OWNER_FILE])
    written = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert written["inputs"][0]["path"] == str(corpus) and len(written["inputs"][0]["sha256"]) == 64
    assert written["metrics"] == manifest.metrics
    assert written["metrics"]["vocab_size"] == 1000
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["corpus"]["train_lines"] + report["corpus"]["heldout_lines"] == report["corpus"]["lines_read"]


def test_unigram_says_once_what_llama_cpp_makes_of_it(corpus, tmp_path, caplog):
    assert UNIGRAM_GGUF not in plan(tokenizer_config([corpus], tmp_path / "bpe")).notes  # the default: bpe
    unigram = tokenizer_config([corpus], tmp_path / "unigram", model_type="unigram")
    assert UNIGRAM_GGUF in plan(unigram).notes  # --dry-run prints it
    with caplog.at_level("WARNING", logger="tokenizer.tokenizer_stage"):
        run_stage(STAGES["tokenizer"], unigram)
    assert [r.getMessage() for r in caplog.records if "llama.cpp" in r.getMessage()] == [UNIGRAM_GGUF]
    assert json.loads((tmp_path / "unigram" / "report.json").read_text())["tokenizer"]["model_type"] == "unigram"


def _cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.stage", "tokenizer", "--config", "configs/demo-cpu.yaml",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_trains_from_arbitrary_files(corpus, tmp_path):
    other = tmp_path / "extra.jsonl"
    other.write_text(json.dumps({"text": "JSONLの文書です。\nSecond line."}, ensure_ascii=False) + "\n")
    out = tmp_path / "tok"
    proc = _cli(f"tokenizer.inputs=[{corpus},{other}]", "tokenizer.vocab_size=1000",
                "tokenizer.character_coverage=0.98", f"tokenizer.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [i["path"] for i in manifest["inputs"]] == [str(corpus), str(other)]
    assert manifest["config"]["tokenizer"]["num_workers"] == 2
    assert report["heldout"]["round_trip_failures"] == 0
    assert report["tokenizer"]["model_type"] == "bpe" and "llama.cpp" not in proc.stderr  # the demo's default
    assert manifest["metrics"]["boundary_crossing_rate"] == report["heldout"]["boundary_crossing_rate"] <= 0.02


def test_cli_reports_config_errors_in_one_line_with_exit_2():
    proc = _cli("tokenizer.inputs=[]")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: tokenizer.inputs: empty;")
