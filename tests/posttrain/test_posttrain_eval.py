"""The eval stage: perplexity per language, generation, code-switch rate, the printed benchmark commands."""

from __future__ import annotations

import json
import math

from factory.data.langmix import LangMixDetector
from factory.posttrain.evaluate import code_switch
from factory.runner import run_stage
from factory.registry import STAGES
from tests.posttrain.conftest import DEMO_DATA, copy_model, post_config


def test_eval_reports_perplexity_per_language_and_code_switch_rate(llama_dir, tmp_path, capsys):
    copy_model(llama_dir, tmp_path / "dpo" / "hf")  # the default model: the dpo output
    heldout = [{"path": str(DEMO_DATA / f"heldout-{lang}.jsonl"), "language": lang} for lang in ("ja", "en")]
    cfg = post_config(tmp_path, eval={"heldout": heldout, "prompts": str(DEMO_DATA / "prompts.jsonl"),
                                      "max_new_tokens": 8})
    manifest = run_stage(STAGES["eval"], cfg).to_dict()
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    for lang in ("ja", "en"):
        p = report["perplexity"][lang]
        assert p["documents"] == 6 and p["tokens"] > 20 and 1 < p["perplexity"] < 2 * 700  # random init ~ vocab
        assert math.isclose(manifest["metrics"][f"perplexity.{lang}"], p["perplexity"], rel_tol=1e-3)
    cs = report["code_switch"]
    assert cs["japanese_answers"] == 5 and 0 <= cs["rate"] <= 1
    generations = (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()
    assert len(generations) == 6
    printed = capsys.readouterr().out
    for tool in ("lm_eval --model hf", "evaluate_llm.py", "--bench-name japanese_mt_bench"):
        assert tool in printed and tool in (tmp_path / "eval" / "report.md").read_text()
    assert str((tmp_path / "dpo" / "hf").resolve()) in report["commands"]["lm-evaluation-harness"]


def test_code_switch_rate_flags_a_spliced_multiscript_answer():
    answers = [{"language": "ja", "answer": "日本の首都は Τόκιο 東京です。그리고 とても大きい都市です。"},
               {"language": "ja", "answer": "日本の首都は東京です。"},
               {"language": "en", "answer": "The capital of Japan is Tokyo."}]
    cs = code_switch(answers, LangMixDetector())
    assert (cs.rate, cs.flagged, cs.japanese_answers) == (0.5, 1, 2)
    findings = " ".join(cs.examples[0]["findings"])
    assert "Greek" in findings and "Hangul" in findings


def test_eval_exports_a_megatron_checkpoint_first(tmp_path):
    from tests.conftest import TINY_DENSE
    from tests.convert.conftest import save_megatron, write_tokenizer

    ckpt = save_megatron(tmp_path / "checkpoints", TINY_DENSE)
    tokenizer = write_tokenizer(tmp_path / "tokenizer")  # <run.dir>/tokenizer: the default for a checkpoint
    heldout = tmp_path / "en.jsonl"
    heldout.write_text('{"text": "w1 w2 w3 w4 w5 w6"}\n{"text": "w7 w8 w9"}\n')
    cfg = post_config(tmp_path, eval={"model": str(ckpt), "heldout": [{"path": str(heldout), "language": "en"}]})
    manifest = run_stage(STAGES["eval"], cfg).to_dict()
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["model"] == str(ckpt) and report["perplexity"]["en"]["tokens"] == (6 - 1) + (3 - 1)
    assert manifest["metrics"]["perplexity.en"] > 1 and tokenizer.is_dir()
    assert str((tmp_path / "export" / "hf").resolve()) in report["commands"]["lm-evaluation-harness"]
