"""Generation against a real loopback server running a tiny HF model: ids, provenance, retries, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from factory.endpoints.client import ChatClient, EndpointError
from factory.endpoints.server import BackendError, ChatServer, Completion, HFBackend
from factory.errors import DataError
from factory.jsonl_log import JsonlLog
from factory.stage import main
from factory.synth.config import SynthConfig
from factory.synth.generate import SAMPLE_FIELDS, generate, iter_jobs, load_personas, load_seeds
from factory.synth.judge import parse_verdict

pytestmark = pytest.mark.timeout(120)
PERSONAS = ["地方の高校で物理を教える教師", "町工場を継いだ二代目の経営者"]
SEEDS = [{"doc": f"d{i}", "body": f"文書{i}: 日本の鉄道は時間に正確なことで知られている。" * 3} for i in range(3)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random-weight Llama (hidden 32, 2 layers) with a byte-level BPE tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["今日は良い天気です。", "質問: 回答: ユーザー: アシスタント:"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backend(model_dir) -> HFBackend:
    return HFBackend(model_dir, max_new_tokens=8)


@pytest.fixture
def seeds_file(tmp_path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in SEEDS), encoding="utf-8")
    return path


def synth_config(seeds: Path, url: str, **kw) -> SynthConfig:
    raw = {"base_url": url, "model": "tiny", "personas": PERSONAS, "tasks": ["qa", "dialogue"],
           "seeds": {"path": str(seeds), "text_field": "body", "id_field": "doc"}, "max_tokens": 8,
           "concurrency": 2, "max_retries": 3, "backoff_seconds": 0.01, "timeout_seconds": 5.0, **kw}
    return SynthConfig.model_validate(raw)


def client_for(sc: SynthConfig) -> ChatClient:
    return ChatClient(sc.base_url, timeout=sc.timeout_seconds, max_retries=sc.max_retries,
                      backoff=sc.backoff_seconds, backoff_max=sc.backoff_max_seconds)


def expected_ids(sc: SynthConfig) -> set[str]:
    return {j.id for j in iter_jobs(sc, load_personas(sc), load_seeds(sc.seeds))}


def written_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_generates_every_job_once_with_provenance(backend, seeds_file, tmp_path):
    out = JsonlLog(tmp_path / "out" / "samples.jsonl")
    with ChatServer(backend).running() as url:
        sc = synth_config(seeds_file, url)
        stats = generate(sc, client_for(sc), out)
        before = out.path.read_bytes()
        again = generate(sc, client_for(sc), out)
    ids = written_ids(out.path)
    assert stats["jobs_planned"] == stats["jobs_generated"] == 2 * 3 * 2
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(sc)
    rec = next(out.records())
    assert {rec["model"], rec["template"][-3:]} == {"tiny", "-v1"} and rec["seed_id"] in {"d0", "d1", "d2"}
    assert rec["persona"] in PERSONAS and rec["task"] in {"qa", "dialogue"} and isinstance(rec["text"], str)
    assert "文書" in rec["prompt"] and rec["persona"] in rec["prompt"]
    assert again["jobs_generated"] == 0 and again["jobs_resumed"] == 12 and out.path.read_bytes() == before


class Flaky:
    """Wraps a backend; request n fails per `faults[n % len(faults)]`: an HTTP status, 'slow' or None."""

    def __init__(self, inner, faults: list, slow_s: float):
        self.inner, self.faults, self.slow_s = inner, faults, slow_s
        self.calls = self.injected = 0
        self._lock = threading.Lock()

    def complete(self, messages, max_tokens, temperature, seed):
        with self._lock:
            fault = self.faults[self.calls % len(self.faults)]
            self.calls += 1
            self.injected += fault is not None
        if fault == "slow":
            time.sleep(self.slow_s)  # past the client's timeout: it has hung up by now
            raise BackendError(504, "too late")
        if fault is not None:
            raise BackendError(fault, "injected")
        return self.inner.complete(messages, max_tokens, temperature, seed)


def test_flaky_server_retries_and_resume_lose_and_duplicate_nothing(backend, seeds_file, tmp_path):
    flaky = Flaky(backend, [None, 503, None, 429, None, "slow", None, 500], slow_s=1.5)
    out = JsonlLog(tmp_path / "samples.jsonl")
    with ChatServer(flaky).running() as url:
        # No retries: the first fault stops the run; what finished is kept.
        strict = synth_config(seeds_file, url, max_retries=0, timeout_seconds=1.0)
        with pytest.raises(EndpointError, match="failed after 1 attempts"):
            generate(strict, client_for(strict), out)
        partial = written_ids(out.path)
        # With retries the rerun rides out every fault and only does what is missing.
        patient = synth_config(seeds_file, url, max_retries=4, timeout_seconds=1.0)
        stats = generate(patient, client_for(patient), out)
    ids = written_ids(out.path)
    assert 0 < len(partial) < 12 and ids[:len(partial)] == partial
    assert stats["jobs_resumed"] == len(partial) and stats["jobs_generated"] == 12 - len(partial)
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(patient)
    assert flaky.injected >= 4


def test_torn_last_line_is_dropped_and_redone(backend, seeds_file, tmp_path):
    out = JsonlLog(tmp_path / "samples.jsonl")
    with ChatServer(backend).running() as url:
        sc = synth_config(seeds_file, url, tasks=["summary"])
        generate(sc, client_for(sc), out)
        lines = out.path.read_text(encoding="utf-8").splitlines(keepends=True)
        out.path.write_text("".join(lines[:-1]) + lines[-1][:20], encoding="utf-8")  # crash mid-write
        stats = generate(sc, client_for(sc), out)
    ids = written_ids(out.path)
    assert stats["jobs_generated"] == 1 and len(ids) == len(set(ids)) == 6


def test_malformed_seed_line_names_file_and_line(seeds_file):
    with seeds_file.open("a", encoding="utf-8") as f:
        f.write('{"doc": "d9", "body": \n')
    sc = synth_config(seeds_file, "http://127.0.0.1:9/v1")
    with pytest.raises(DataError, match=rf"{seeds_file.name}:4: invalid JSON"):
        load_seeds(sc.seeds)


def start_server_process(model_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "factory.endpoints.server", str(model_dir), "--port", "0",
                             "--max-new-tokens", "8"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[3])
    line = proc.stdout.readline()
    assert line.startswith("serving http://127.0.0.1:"), line
    return proc, line.split()[1]


def test_server_killed_mid_run_then_restarted_completes(model_dir, backend, seeds_file, tmp_path):
    """The server process is SIGKILLed after 3 records; a fresh server then serves the rerun."""
    out = JsonlLog(tmp_path / "samples.jsonl")
    proc, url = start_server_process(model_dir)
    try:
        def kill_after_three_records() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not out.path.exists() or out.path.read_bytes().count(b"\n") < 3):
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_three_records)
        killer.start()
        sc = synth_config(seeds_file, url, max_retries=2, samples_per_prompt=2)
        with pytest.raises(EndpointError):
            generate(sc, client_for(sc), out)
        killer.join()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    partial = written_ids(out.path)
    # The restarted server listens on a new port: the endpoint is not part of a record id.
    with ChatServer(backend).running() as url:
        sc = synth_config(seeds_file, url, max_retries=2, samples_per_prompt=2)
        stats = generate(sc, client_for(sc), out)
    ids = written_ids(out.path)
    assert 3 <= len(partial) < 24 and stats["jobs_resumed"] == len(partial)
    assert len(ids) == len(set(ids)) == 24 and set(ids) == expected_ids(sc)


def test_stage_writes_samples_preference_pairs_and_manifest(backend, seeds_file, tmp_path):
    judge = Judge()
    with ChatServer(backend).running() as url, ChatServer(judge).running() as judge_url:
        config = tmp_path / "synth.yaml"
        config.write_text(yaml.safe_dump({"run": {"name": "t", "dir": str(tmp_path / "run")}, "synth": {
            **synth_config(seeds_file, url, samples_per_prompt=2, tasks=["rewrite"]).model_dump(mode="json"),
            "preference": {"enabled": True, "judge_base_url": judge_url}}}, allow_unicode=True))
        assert main(["synth", "--config", str(config)]) == 0
    stage_dir = tmp_path / "run" / "synth"
    metrics = json.loads((stage_dir / "manifest.json").read_text())["metrics"]
    pairs = [json.loads(line) for line in (stage_dir / "preference.jsonl").read_text().splitlines()]
    samples = {r["id"]: r["text"] for r in JsonlLog(stage_dir / "samples.jsonl").records()}
    assert metrics["jobs_generated"] == 12 and metrics["pairs_candidates"] == metrics["pairs_decided"] == 6
    assert len(pairs) == 6 and all(p["chosen_id"] != p["rejected_id"] for p in pairs)
    assert all(samples[p["chosen_id"]] == p["chosen"] and samples[p["rejected_id"]] == p["rejected"] for p in pairs)
    assert sorted(p["chosen"] for p in pairs) == sorted(judge.shown_second)
    assert {p["judge_template"] for p in pairs} == {"judge-v1"}


@pytest.mark.parametrize("text, verdict", [("理由。[[A]]", "A"), ("[[B]]", "B"), ("[[A]] か [[B]]", None),
                                           ("どちらも良い", None)])
def test_parse_verdict_needs_exactly_one_winner(text, verdict):
    assert parse_verdict(text) == verdict


class Judge:
    """A judge endpoint that always prefers the answer shown second."""

    def __init__(self):
        self.shown_second: list[str] = []

    def complete(self, messages, max_tokens, temperature, seed) -> Completion:
        assert temperature == 0.0
        self.shown_second.append(messages[-1]["content"].split("# 回答B\n", 1)[1])
        return Completion("回答Bの方が具体的です。[[B]]", 10, 5, "stop")


def test_stage_reports_missing_seeds_as_config_error(tmp_path, capsys):
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump({"run": {"name": "t", "dir": str(tmp_path / "run")}, "synth": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "personas": ["p"], "seeds": {"path": "nope.jsonl"}}}))
    assert main(["synth", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == "error: synth: input not found: nope.jsonl"


def test_a_teacher_folder_is_served_for_the_stage_then_stopped(model_dir, seeds_file, tmp_path, capfd):
    import re
    import socket
    import urllib.parse

    config = tmp_path / "synth.yaml"
    section = synth_config(seeds_file, "http://unused/v1", samples_per_prompt=2, tasks=["rewrite"]).model_dump(
        mode="json", exclude={"base_url", "model"})
    config.write_text(yaml.safe_dump({"run": {"name": "t", "dir": str(tmp_path / "run")}, "synth": {
        **section, "teacher": str(model_dir), "preference": {"enabled": True, "verdict_only": True}}},
        allow_unicode=True))
    threads_before = set(threading.enumerate())
    assert main(["synth", "--config", str(config)]) == 0
    log = " ".join(capfd.readouterr().err.split())
    url = urllib.parse.urlparse(re.search(r" served at (http://\S+/v1)", log)[1])
    assert f"teacher {model_dir} stopped" in log
    with pytest.raises(OSError):  # the port is closed: nothing serves the teacher after the stage
        socket.create_connection((url.hostname, url.port), timeout=1).close()
    assert set(threading.enumerate()) <= threads_before
    stage_dir = tmp_path / "run" / "synth"
    records = list(JsonlLog(stage_dir / "samples.jsonl").records())
    pairs = [json.loads(line) for line in (stage_dir / "preference.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["model"] for r in records} == {str(model_dir)}
    assert len(pairs) == 6 and {p["judgement"] for p in pairs} <= {"[[A]]", "[[B]]"}


def test_a_recorded_null_text_is_skipped_counted_and_done_again(backend, seeds_file, tmp_path, caplog):
    """samples.jsonl written before responses were checked holds a `"text": null`: it is not a done job."""
    out = JsonlLog(tmp_path / "samples.jsonl", SAMPLE_FIELDS)
    with ChatServer(backend).running() as url:
        sc = synth_config(seeds_file, url, tasks=["summary"])
        generate(sc, client_for(sc), out)
        lines = out.path.read_text(encoding="utf-8").splitlines(keepends=True)
        broken = {**json.loads(lines[2]), "text": None}
        out.path.write_text("".join(lines[:2] + lines[3:]) + json.dumps(broken) + "\n", encoding="utf-8")
        stats = generate(sc, client_for(sc), out)
    assert stats["jobs_generated"] == 1 and stats["samples_skipped_unusable"] == 1
    assert f"samples.jsonl: skipped 1 record(s) that are not usable, to be done again (first {out.path}:6: " \
           "'text' is null)" in caplog.text
    records = list(out.records())
    assert len(records) == 6 and {r["id"] for r in records} == expected_ids(sc)
    assert out.path.read_text(encoding="utf-8").count("\n") == 7  # the old line is kept, not rewritten


def test_a_personas_file_is_read_as_text_records(tmp_path):
    path = tmp_path / "personas.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "教師\n\n医師\n".encode())
    sc = SynthConfig.model_validate({"base_url": "http://127.0.0.1:9/v1", "model": "m", "personas_file": str(path),
                                     "seeds": {"path": str(path)}})
    assert load_personas(sc) == ["教師", "医師"]  # the byte-order mark is not part of the first persona
    path.write_bytes("教師\n".encode() + b"\xff\n")
    with pytest.raises(DataError, match=rf"^{path}:2: not UTF-8"):
        load_personas(sc)
