"""The `data` stage end to end: counts add up, rejected side file, error budget, atomic output, CLI, ids and
fields kept, undecodable bytes, empty results, a resumed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from factory.config import validate_config
from factory.errors import ConfigError, DataError
from factory.registry import STAGES
from factory.runner import run_stage

DOCS = [
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で泣いていた事だけは記憶している。",
    "富士山は標高3776メートルで、日本で最も高い山である。夏の登山シーズンには多くの登山者が山頂を目指す。",
    "Pythonのリスト内包表記は便利だ。詳しくは https://docs.python.org/ja/3/ を参照し、GPUの設定も確認する。",
    "味噌汁の作り方は家庭によって少しずつ違う。昆布と鰹節で出汁をとる家もあれば、煮干しを使う家もある。",
]
NEAR = DOCS[0].replace("名前はまだ無い", "名前はまだない")
MIXED = "東京から大阪までは新幹線で約2時間30分かかる。jednak to jest 指定席は混雑するので早めに予約する。"
ENGLISH = "The quick brown fox jumps over the lazy dog, again and again, near the river bank."


def _write_inputs(tmp_path, bad_lines: int = 1):
    ja = tmp_path / "ja.jsonl"
    rows = [{"content": t} for t in DOCS + [DOCS[1], NEAR, MIXED, "短い", ENGLISH]]
    ja.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{broken\n" * bad_lines,
                  encoding="utf-8")
    en = tmp_path / "en.txt"
    en.write_text(f"{ENGLISH}\n\nA second English paragraph that is long enough to keep.\n", encoding="utf-8")
    return ja, en


def _config(tmp_path, ja, en, **data):
    section = {"inputs": [{"path": str(ja), "text_field": "content"}, {"path": str(en), "japanese": False}],
               "output_dir": str(tmp_path / "out"), "num_workers": 1, "max_error_rate": 0.2, **data}
    return validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")}, "data": section})


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_counts_add_up_and_every_rejection_is_recorded_with_its_reason(tmp_path):
    ja, en = _write_inputs(tmp_path)
    manifest = run_stage(STAGES["data"], _config(tmp_path, ja, en))
    out = tmp_path / "out"
    kept, rejected = _jsonl(out / "kept.jsonl"), _jsonl(out / "rejected.jsonl")
    assert [r["text"] for r in kept] == DOCS + [ENGLISH, "A second English paragraph that is long enough to keep."]
    assert len({r["id"] for r in kept}) == len(kept)
    by_reason = {r["reason"]: r for r in rejected}
    assert Counter(r["reason"] for r in rejected) == {
        "exact_dup": 1, "near_dup": 1, "langmix": 1, "length": 1, "japanese_share": 1, "malformed": 1}
    assert by_reason["exact_dup"]["source"] == f"{ja}:5"
    assert by_reason["near_dup"]["source"] == f"{ja}:6" and by_reason["near_dup"]["detail"].startswith("near dup")
    assert by_reason["langmix"]["text"] == MIXED and "jednak to jest" in by_reason["langmix"]["detail"]
    assert by_reason["malformed"]["source"] == f"{ja}:10" and by_reason["malformed"]["text"] == "{broken"
    m = manifest.metrics
    assert (m["in"], m["kept"], m["rejected"]) == (12, 6, 6)
    assert m["in"] == m["kept"] + sum(v for k, v in m.items() if k.startswith("rejected."))
    assert m["rejected.duplicate_lines"] == 0 and m["rejected.langmix"] == 1 and m["rejected.encoding"] == 0
    assert json.loads((out / "manifest.json").read_text())["metrics"] == m


def test_too_many_malformed_lines_fail_and_leave_nothing_behind(tmp_path):
    ja, en = _write_inputs(tmp_path, bad_lines=4)
    with pytest.raises(DataError, match=rf"{ja}: 4 of 13 records malformed .* first: {ja}:10: invalid JSON"):
        run_stage(STAGES["data"], _config(tmp_path, ja, en))
    assert not (tmp_path / "out").exists()


def test_missing_section_or_input_is_a_config_error(tmp_path):
    ja, en = _write_inputs(tmp_path)
    with pytest.raises(ConfigError, match="not found: .*nope.jsonl"):
        run_stage(STAGES["data"], _config(tmp_path, tmp_path / "nope.jsonl", en))
    bare = validate_config({"run": {"name": "t", "dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match="no 'data' section"):
        run_stage(STAGES["data"], bare)


def test_cli_end_to_end_with_two_workers(tmp_path):
    ja, en = _write_inputs(tmp_path)
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "factory.stage", "data", "--config", "configs/demo-cpu.yaml",
           f"data.inputs=[{ja}, {en}]", "data.text_field=content", f"data.output_dir={out}",
           "data.text_unit=paragraph", "data.max_error_rate=0.2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    # en.txt is read as Japanese here (bare paths default to japanese: true): its paragraphs fail the share.
    assert metrics["rejected.japanese_share"] == 3 and metrics["kept"] == 4
    assert metrics["in"] == metrics["kept"] + metrics["rejected"] == 12
    assert len(_jsonl(out / "kept.jsonl")) == 4 and len(_jsonl(out / "rejected.jsonl")) == 8


def test_cli_reports_bad_input_in_one_line(tmp_path):
    ja, en = _write_inputs(tmp_path, bad_lines=4)
    cmd = [sys.executable, "-m", "factory.stage", "data", "--config", "configs/demo-cpu.yaml",
           f"data.inputs=[{ja}]", "data.text_field=content", f"data.output_dir={tmp_path / 'cli'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {ja}: 4 of 13 records malformed")
    assert "Traceback" not in proc.stderr


def test_input_ids_and_fields_are_kept_with_the_source(tmp_path):
    rows = [{"id": "doc-7", "url": "https://example.jp/a", "meta": {"year": 2024}, "content": DOCS[0]},
            {"url": "https://example.jp/b", "content": DOCS[1]}]
    ja = tmp_path / "ja.jsonl"
    ja.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")},
                           "data": {"inputs": [{"path": str(ja), "text_field": "content"}],
                                    "output_dir": str(tmp_path / "out"), "num_workers": 1}})
    run_stage(STAGES["data"], cfg)
    first, second = _jsonl(tmp_path / "out" / "kept.jsonl")
    assert first == {"id": "doc-7", "url": "https://example.jp/a", "meta": {"year": 2024}, "text": DOCS[0],
                     "source": f"{ja}:1"}
    assert second["url"] == "https://example.jp/b" and len(second["id"]) == 32 and "content" not in second


def test_undecodable_bytes_are_rejected_as_encoding_with_file_and_line(tmp_path):
    ja = tmp_path / "ja.txt"
    ja.write_bytes(f"{DOCS[0]}\n\n".encode() + b"\xff\xfe broken \xe3\x81\n\n" + f"{DOCS[1]}\n".encode())
    cfg = validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")},
                           "data": {"inputs": [str(ja)], "output_dir": str(tmp_path / "out"), "num_workers": 1,
                                    "max_error_rate": 0.5}})
    metrics = run_stage(STAGES["data"], cfg).metrics
    assert (metrics["kept"], metrics["rejected.encoding"], metrics["rejected.malformed"]) == (2, 1, 0)
    (bad,) = _jsonl(tmp_path / "out" / "rejected.jsonl")
    assert bad["source"] == f"{ja}:3" and bad["reason"] == "encoding" and "not UTF-8" in bad["detail"]
    assert "\ufffd" not in (tmp_path / "out" / "kept.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("text", ["", "短い\n"], ids=["nothing-in", "nothing-kept"])
def test_an_empty_result_is_an_error_unless_allowed(tmp_path, text):
    corpus = tmp_path / "ja.txt"
    corpus.write_text(text, encoding="utf-8")
    section = {"inputs": [str(corpus)], "output_dir": str(tmp_path / "out"), "num_workers": 1}
    run = {"name": "t", "dir": str(tmp_path / "run")}
    with pytest.raises(DataError, match=r"(no records in|none of 1 records kept) .*data.allow_empty=true"):
        run_stage(STAGES["data"], validate_config({"run": run, "data": section}))
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.work").exists()
    metrics = run_stage(STAGES["data"], validate_config({"run": run, "data": {**section, "allow_empty": True}})).metrics
    assert metrics["kept"] == 0 and (tmp_path / "out" / "kept.jsonl").read_text() == ""


def test_a_run_killed_during_dedup_continues_with_the_unfinished_steps(tmp_path, monkeypatch, caplog):
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

    ja, en = _write_inputs(tmp_path)
    fresh = run_stage(STAGES["data"], _config(tmp_path / "fresh", ja, en)).metrics
    real_run = MinhashDedupCluster.run

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MinhashDedupCluster, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        run_stage(STAGES["data"], _config(tmp_path, ja, en))
    work = tmp_path / ".out.work"
    filtered = sorted((work / "filtered").glob("*.jsonl"))
    assert len(filtered) == 2 and not (tmp_path / "out").exists()
    monkeypatch.setattr(MinhashDedupCluster, "run", real_run)
    caplog.clear()
    resumed = run_stage(STAGES["data"], _config(tmp_path, ja, en)).metrics
    assert "data: filter, 2 tasks (2 already done)" in caplog.text  # the finished tasks did not rerun
    assert "data: minhash_buckets, 9 tasks (9 already done)" in caplog.text
    assert "data: minhash_cluster, 1 tasks\n" in caplog.text + "\n"
    assert resumed == fresh and not work.exists()


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_ends_in_one_line_and_the_rerun_continues(tmp_path):
    corpus = tmp_path / "ja.txt"
    corpus.write_text("".join(f"{DOCS[i % 4]}その{i}番目の段落である。\n" for i in range(40_000)), encoding="utf-8")
    cmd = [sys.executable, "-m", "factory.stage", "data", "--config", "configs/demo-cpu.yaml",
           f"data.inputs=[{corpus}]", f"data.output_dir={tmp_path / 'out'}", "data.dedup.near=false"]
    # Ctrl-C's default disposition, as in a terminal: a suite started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stderr:  # interrupt once the pool is at work
        lines.append(line)
        if "data: filter" in line:
            break
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    stderr = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=60) != 0
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and stderr.count("error:") == 1
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.work").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "continuing the unfinished run" in rerun.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["metrics"]["kept"] == 40_000
