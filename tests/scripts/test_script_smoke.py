"""Every script the docs cite runs its cheapest real path and prints what it is for (not just --help).

A script that drifts from the code or configs it drives (as scripts/science_upcycle.py did when the demo's cpt
phases began to name the synth stage's blend) fails here. Scripts with tests of their own elsewhere:
gpu_bundle.sh (tests/scripts/test_gpu_bundle.py), langmix_eval_set.py and langmix_unseen.py
(tests/scripts/test_langmix_eval_set.py), render_slurm_templates.py (tests/launch/test_launch_slurm.py),
measure_training_memory.py (tests/slow/test_memory_plan.py), compare_llama_cpp.py (tests/convert/test_llama_cpp.py,
where llama.cpp is built). `test_every_cited_script_has_a_smoke_test` keeps
the list complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tokenizer.conftest import corpus  # noqa: F401 - a fixture: ~230 KB of Japanese and English lines
from tests.train.conftest import packed_data  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TESTED_ELSEWHERE = {"gpu_bundle.sh", "device_check.sh", "langmix_eval_set.py", "langmix_unseen.py", "render_slurm_templates.py",
                    "measure_training_memory.py", "compare_llama_cpp.py"}
SMOKED = {"bench_attention_mfu.py", "bench_checkpoint.py", "bench_convert.py", "bench_data.py",
          "bench_granularity.py", "bench_langmix.py", "bench_model.py", "bench_model_type.py", "bench_pack.py",
          "bench_tokenizer.py", "bench_upcycle.py", "bench_vocab.py", "build_llama_cpp.sh",
          "demo.sh", "demo_generate.py", "fetch_demo_text.sh", "fetch_langmix_text.sh", "science_upcycle.py",
          "setup.sh", "soak_resume.py", "test.sh", "tokenizer_heldout.py"}


def _run(*cmd, timeout: int = 600, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def test_every_cited_script_has_a_smoke_test():
    cited = set()
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        cited |= set(re.findall(r"scripts/([\w.]+\.(?:py|sh))", doc.read_text(encoding="utf-8")))
    cited = {name for name in cited if (ROOT / "scripts" / name).is_file()}
    assert cited - SMOKED - TESTED_ELSEWHERE == set()


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """A few hundred lines of Japanese and English, one document a line."""
    path = tmp_path_factory.mktemp("text") / "ja.txt"
    lines = ["吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。", "東京都は日本の首都です。人口は約千四百万人です。",
             "機械学習のモデルを訓練するにはデータが必要です。", "今日は良い天気ですね。散歩に行きましょう。公園の桜がきれいです。",
             "The quick brown fox jumps over the lazy dog."]
    path.write_text("\n".join(f"{i}番目: {lines[i % len(lines)]}" for i in range(300)) + "\n", encoding="utf-8")
    return path


# ---- benchmarks, each at its smallest setting
def test_bench_attention_mfu():
    out = _run(PY, "scripts/bench_attention_mfu.py", "--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0",
               "--backends", "sdpa")
    assert re.search(r"^\| sdpa \| [\d.]+ \|", out, re.M), out


def test_bench_checkpoint(tmp_path):
    out = _run(PY, "scripts/bench_checkpoint.py", "--hidden", "64", "--layers", "1", "--vocab", "256", "--seq", "32",
               "--steps", "1", "--out", tmp_path)
    [figures] = json.loads(out[out.index("["):])
    assert figures["sync_wait_s"] > 0 and figures["background_write_s"] > 0 and figures["commit_s"] > 0
    read = figures["fully_parallel_load"]["bytes_read"]
    assert 0.9 * figures["tensor_file_bytes"] < read <= figures["tensor_file_bytes"]  # each stored byte once


@pytest.mark.slow
def test_bench_convert(tmp_path):
    out = _run(PY, "scripts/bench_convert.py", "--workdir", tmp_path, "--layers", "1", "--hidden", "64", "--ffn",
               "128", "--heads", "4", "--groups", "2", "--vocab", "256", "--shard-gb", "0.0001")
    figures = json.loads(out[out.index("{"):])
    assert figures["export_max_abs_logit_diff"] <= 1e-4 and figures["import_max_abs_logit_diff"] <= 1e-4, figures
    assert figures["make_s"] > 0 and figures["export_s"] > 0 and figures["import_s"] > 0


def test_bench_data(text):
    out = _run(PY, "scripts/bench_data.py", f"data.inputs=[{{path: {text}}}]", "data.num_workers=1")
    assert re.search(r"300 docs in, \d+ kept", out) and "docs/s per core" in out, out


def test_bench_granularity(corpus):  # noqa: F811
    out = _run(PY, "scripts/bench_granularity.py", "--train", corpus, "--heldout", corpus, "--vocab-size", "1400",
               "--granularities", "none,morpheme", "--workers", "1")
    assert "| none |" in out and "| morpheme |" in out, out


def test_bench_langmix(tmp_path):
    rows = [{"text": "これは日本語の文章です。", "kind": "clean", "mixed": False, "inserted": ""},
            {"text": "これは日本語の文章ですが、dies ist ein deutscher Satz mitten im Text。", "kind": "latin",
             "mixed": True, "inserted": "dies ist ein deutscher Satz"}]
    sets = tmp_path / "tune.jsonl"
    sets.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = _run(PY, "scripts/bench_langmix.py", sets)
    assert f"{sets}: 2 documents" in out and re.search(r"clean +1 +false positives", out), out


def test_bench_model():
    out = _run(PY, "scripts/bench_model.py", "configs/demo-cpu.yaml", "--steps", "1", "--warmup", "0",
               "--micro-batch", "1")
    assert re.search(r"micro_batch=1 seq=128 step_s=[\d.]+ tokens_per_s=", out), out


def test_bench_model_type(corpus):  # noqa: F811
    out = _run(PY, "scripts/bench_model_type.py", "--train", corpus, "--half", "tune", corpus, "--vocab-size", "1400",
               "--model-types", "bpe", "--workers", "1")
    assert "| bpe |" in out, out


def test_bench_pack(packed_data):  # noqa: F811
    out = _run(PY, "scripts/bench_pack.py", packed_data / "docs.jsonl", packed_data / "tokenizer", "--workers", "1")
    assert "docs.jsonl:" in out and "| step | wall s |" in out, out


def test_bench_tokenizer(corpus):  # noqa: F811
    out = _run(PY, "scripts/bench_tokenizer.py", corpus, "--vocab-size", "1400", "--dictionaries", "unidic-lite")
    assert "| step | workers/threads |" in out and "unidic-lite" in out, out


@pytest.mark.slow
def test_bench_upcycle(tmp_path):
    out = _run(PY, "scripts/bench_upcycle.py", "--small", "--work", tmp_path)
    assert "benchmark:" in out and "stage:" in out, out


def test_bench_vocab(packed_data, text):  # noqa: F811
    tokenizer = packed_data / "tokenizer"
    out = _run(PY, "scripts/bench_vocab.py", tokenizer / "tokenizer.model", tokenizer, "--text", text,
               "--max-new-pieces", "50", "--max-lines", "100")
    assert re.search(r"^\| 50 \|", out, re.M), out


# ---- the demo and the science scripts
@pytest.mark.slow
def test_science_upcycle(packed_data, tmp_path):  # noqa: F811
    out = _run(PY, "scripts/science_upcycle.py", "--data", packed_data, "--out", tmp_path, "--seeds", "1",
               "--cpt-iters", "2", "--pretrain-iters", "8", "--variants", "dense,copy")
    assert re.search(r"^copy \| [\d.]+ \[[\d.]+, [\d.]+\] \| [+-][\d.]+ \| [\d.]+$", out, re.M), out
    assert (tmp_path / "upcycle_vs_dense.png").is_file()


def test_science_upcycle_config_error_is_one_line(tmp_path):
    proc = subprocess.run([PY, "scripts/science_upcycle.py", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                           "--pretrain-iters", "2"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: configs/demo-cpu.yaml: pretrain.schedule.warmup_iters=6: must be smaller than the decay iterations "
        "(decay_iters or train_iters)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_soak_resume(packed_data):  # noqa: F811
    out = _run(PY, "scripts/soak_resume.py", "--data", packed_data, "--cycles", "1", "--iters", "4")
    assert "1/1 identical to the uninterrupted run" in out, out


def test_demo_generate(tmp_path):
    from tests.convert.conftest import write_hf_model

    folder = write_hf_model(tmp_path / "hf", "llama")
    out = _run(PY, "scripts/demo_generate.py", folder, "--prompt", "w5 w6", "--max-new-tokens", "2")
    assert out.startswith(f"LlamaForCausalLM from {folder}: 'w5 w6' -> "), out


def _venv_is_set_up() -> bool:
    want = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in ("pyproject.toml", "scripts/setup.sh",
                                                                     "scripts/constraints.txt"))).hexdigest()
    stamp = ROOT / ".venv" / ".setup-stamp"
    return stamp.is_file() and stamp.read_text().strip() == want


needs_setup = pytest.mark.skipif(not _venv_is_set_up(), reason="the .venv is not set up for this checkout: a smoke "
                                 "run would install into it (run scripts/setup.sh)")


@needs_setup
def test_setup_is_idempotent():
    assert _run("bash", "scripts/setup.sh").strip() == "setup: .venv is up to date"


@needs_setup
def test_test_sh_runs_pytest():
    # One module collected, not run (a path replaces the default `tests`), on `-n 0` (a later -n overrides): pytest-
    # xdist starts no workers for a collection anyway. The whole suite's collection costs ~8 s here.
    out = _run("bash", "scripts/test.sh", "--collect-only", "-q", "-n", "0", "tests/test_lock.py")
    assert out.startswith("setup: .venv is up to date"), out
    assert re.search(r"^tests/test_lock\.py: \d+$", out, re.M) and "tests/test_config.py" not in out, out


@needs_setup
@pytest.mark.skipif(not (ROOT / "data" / "demo" / "ja.txt").is_file(),
                    reason="needs the demo text in data/demo (scripts/fetch_demo_text.sh, from the Debian archive)")
def test_demo_sh_dry_run():
    out = _run("bash", "scripts/demo.sh", "--dry-run")
    assert "demo text already present" in out and "demo: report at runs/demo-cpu/report/report.md" in out, out


# ---- text from the Debian archive (network; skipped when apt-get cannot download)
def _apt_download_works(tmp_path: Path) -> bool:
    proc = subprocess.run(["apt-get", "download", "-q", "maint-guide-ja"], cwd=tmp_path, capture_output=True)
    return proc.returncode == 0


@pytest.mark.slow
def test_fetch_demo_text(tmp_path):
    if shutil.which("apt-get") is None or not _apt_download_works(tmp_path):
        pytest.skip("apt-get cannot download from the Debian archive here")
    _run("bash", "scripts/fetch_demo_text.sh", tmp_path / "demo", env={**ENV, "JA_BYTES": "5000", "EN_BYTES": "5000"})
    ja, en = (tmp_path / "demo" / name for name in ("ja.txt", "en.txt"))
    assert 0 < ja.stat().st_size <= 5000 and 0 < en.stat().st_size <= 5000
    assert re.search(r"[\u3040-\u30ff]", ja.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_fetch_langmix_text(tmp_path):
    if shutil.which("apt-get") is None or not _apt_download_works(tmp_path):
        pytest.skip("apt-get cannot download from the Debian archive here")
    # Every package downloaded and unpacked; the set generated from 20 pages of each (of 6,587) and 20,000 words
    # of each list (of up to 3 million): ~3 CPU-s instead of ~32.
    _run("bash", "scripts/fetch_langmix_text.sh", tmp_path / "langmix", "--per-kind", "2", "--max-pages", "20",
         "--max-words", "20000")
    rows = [json.loads(line) for line in (tmp_path / "langmix" / "tune.jsonl").read_text().splitlines()]
    assert rows and {"text", "kind", "mixed"} <= set(rows[0])


def test_tokenizer_heldout_lists_its_packages():
    out = _run(PY, "scripts/tokenizer_heldout.py", "--list-packages")
    packages = out.split()
    assert packages and all(re.fullmatch(r"[a-z0-9.+-]+", p) for p in packages), out


# ---- llama.cpp: its build takes ~15 minutes; this runs where scripts/build_llama_cpp.sh has built it once
def _llama_cpp_built() -> bool:
    from factory.convert import gguf

    return gguf.built()


@pytest.mark.skipif(not _llama_cpp_built(), reason="llama.cpp is not built here (bash scripts/build_llama_cpp.sh, "
                    "~15 min on 2 cores)")
@pytest.mark.slow
def test_build_llama_cpp_rebuilds_incrementally():
    assert "llama.cpp built:" in _run("bash", "scripts/build_llama_cpp.sh", timeout=1800)
