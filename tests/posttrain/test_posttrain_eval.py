"""The eval stage: perplexity per language, generation, code-switch rate, JGLUE through lm-evaluation-harness
and Japanese MT-Bench into the manifest and reports, the printed hand-off commands, and its bad input."""

from __future__ import annotations

import json
import math

import yaml

from factory.data.langmix import LangMixDetector
from factory.data.synth.server import ChatServer
from factory.posttrain.evaluate import code_switch
from factory.runner import run_stage
from factory.registry import STAGES
from factory.stage import main
from tests.posttrain.conftest import DEMO_DATA, ScriptedJudge, copy_model, free_port, post_config


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
    for tool in ("lm_eval --model hf", "evaluate_llm.py"):
        assert tool in printed and tool in (tmp_path / "eval" / "report.md").read_text()
    assert str((tmp_path / "dpo" / "hf").resolve()) in report["commands"]["lm-evaluation-harness"]


def test_moe_perplexity_is_the_cross_entropy_alone(mixtral_dir, tmp_path):
    """An MoE's own loss adds router_aux_loss_coef x its load-balancing loss; perplexity must not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    heldout = DEMO_DATA / "heldout-ja.jsonl"
    cfg = post_config(tmp_path, eval={"model": str(mixtral_dir), "heldout": [{"path": str(heldout), "language": "ja"}]})
    run_stage(STAGES["eval"], cfg)
    reported = json.loads((tmp_path / "eval" / "report.json").read_text())["perplexity"]["ja"]
    tok = AutoTokenizer.from_pretrained(mixtral_dir)
    model = AutoModelForCausalLM.from_pretrained(mixtral_dir).eval()
    nll, count, with_aux = 0.0, 0, 0.0
    for line in heldout.read_text(encoding="utf-8").splitlines():
        ids = tok(json.loads(line)["text"], return_tensors="pt")["input_ids"][:, :1024]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            with_aux += model(input_ids=ids, labels=ids, output_router_logits=True).loss.item() * (ids.shape[1] - 1)
        nll -= logprobs.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    assert reported["tokens"] == count
    assert math.isclose(reported["perplexity"], math.exp(nll / count), rel_tol=1e-5)
    assert math.exp(with_aux / count) > reported["perplexity"] * (1 + 1e-4)  # what the model's loss would give


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


def test_eval_writes_jglue_and_mt_bench_scores_to_the_manifest_and_reports(llama_dir, eval_data, tmp_path):
    judge = ScriptedJudge()
    with ChatServer(judge, model_name="scripted-judge").running() as url:
        cfg = post_config(tmp_path, eval={
            "model": str(llama_dir), "data_dir": str(eval_data),
            "harness": {"tasks": ["jcommonsenseqa", "jnli"], "num_fewshot": 1, "limit": 3},
            "mt_bench": {"max_new_tokens": 4, "samples": 2, "judge": {"base_url": url, "model": "scripted-judge"}}})
        metrics = run_stage(STAGES["eval"], cfg).to_dict()["metrics"]
    for task, chance in (("jcommonsenseqa", 0.2), ("jnli", 1 / 3)):
        for prefix, metric in ((task, "acc"), (f"llm_jp_eval.{task}", "exact_match")):
            assert metrics[f"{prefix}.{metric}"] in (0.0, 1 / 3, 2 / 3, 1.0) and metrics[f"{prefix}.examples"] == 3
            assert isinstance(metrics[f"{prefix}.{metric}_stderr"], float) and metrics[f"{prefix}.num_fewshot"] == 1
            assert metrics[f"{prefix}.{metric}_chance"] == chance
            assert metrics[f"{prefix}.fewshot_split"].startswith("validation (no train split")
            cut, prompts = metrics[f"{prefix}.prompts_cut"], metrics[f"{prefix}.prompts"]
            assert metrics[f"{prefix}.truncation"].endswith(f": {cut} of {prompts} prompts cut to 256 tokens")
    assert metrics["jnli.prompts"] == 3 * 3 and metrics["llm_jp_eval.jnli.prompts"] == 3  # choices vs one answer
    assert metrics["protocol.llm-jp-eval"].startswith("llm-jp-eval v1") and "0.4.13" in metrics[
        "protocol.lm-evaluation-harness"]
    assert (metrics["mt_bench.overall"], metrics["mt_bench.turn1"], metrics["mt_bench.turn2"]) == (6.0, 8.0, 4.0)
    assert (metrics["mt_bench.overall_std"], metrics["mt_bench.samples"], metrics["mt_bench.refused_turns"]) == (
        0.0, 2, 0)
    assert metrics["mt_bench.judge_model"] == "scripted-judge" and metrics["mt_bench.judged"] == 8
    assert (metrics["mt_bench.writing"], metrics["mt_bench.math"]) == (6.0, 6.0) and judge.calls == 1 + 8
    assert metrics["mt_bench.judge_prompts"] == str(eval_data / "japanese_mt_bench" / "judge_prompts.jsonl")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [(s["protocol"], s["task"], s["metric"]) for s in report["harness"]] == [
        ("lm-evaluation-harness", "jcommonsenseqa", "acc"), ("llm-jp-eval", "jcommonsenseqa", "exact_match"),
        ("lm-evaluation-harness", "jnli", "acc"), ("llm-jp-eval", "jnli", "exact_match")]
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "### lm-evaluation-harness: its own japanese_leaderboard task definitions" in text
    assert "### llm-jp-eval protocol: generation, exact match" in text and "| jcommonsenseqa | acc |" in text
    assert f"- JNLI: {metrics['jnli.prompts_cut']} of 9 prompts cut to 256 tokens" in text
    assert "Judge: `scripted-judge` with the prompts of" in text and "8 of 8 judgements gave a rating" in text
    assert "| **overall** | **6.00 ± 0.00** |" in text


def test_the_plan_checks_the_tokenizer_checkpoints_need_before_scoring_anything(llama_dir, eval_data, tmp_path,
                                                                                  capsys):
    from tests.conftest import TINY_DENSE
    from tests.convert.conftest import save_megatron

    save_megatron(tmp_path / "pretrain" / "checkpoints", TINY_DENSE)
    capsys.readouterr()  # the save's own log lines are not the verb's
    series = [{"path": str(tmp_path / "pretrain" / "checkpoints")}]
    rc, err = _cli(tmp_path, capsys, llama_dir, data_dir=str(eval_data), harness={"limit": 1}, checkpoints=series)
    assert rc == 2 and err == [f"error: eval: input not found: {tmp_path / 'run' / 'tokenizer'}"]
    (tmp_path / "tok").mkdir()
    rc, err = _cli(tmp_path, capsys, llama_dir, data_dir=str(eval_data), harness={"limit": 1}, checkpoints=series,
                   tokenizer_dir=str(tmp_path / "tok"))
    assert rc == 2 and err == [f"error: eval.tokenizer_dir (the tokenizer Megatron checkpoints are exported with): "
                               f"{tmp_path / 'tok'}: no tokenizer_config.json (HF tokenizer files expected)"]
    assert not (tmp_path / "run" / "eval").exists()  # nothing scored, nothing written


def _cli(tmp_path, capsys, llama_dir, *flags, **eval_section) -> tuple[int, list[str]]:
    """The eval verb's exit code and its stderr lines (stdout with --dry-run)."""
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"run": {"name": "t", "dir": str(tmp_path / "run")},
                                      "runtime": {"device": "cpu", "precision": "fp32"},
                                      "eval": {"model": str(llama_dir), **eval_section}}))
    rc = main(["eval", "--config", str(config), *flags])
    captured = capsys.readouterr()
    return rc, (captured.out if flags else captured.err).strip().splitlines()


def test_the_eval_data_folder_is_data_dir_else_the_environment_else_the_cache(llama_dir, eval_data, tmp_path,
                                                                              capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FACTORY_EVAL_DATA", str(eval_data))
    rc, out = _cli(tmp_path, capsys, llama_dir, "--dry-run", harness={"tasks": ["jnli"]})
    assert rc == 0 and f"# reads:  {eval_data / 'jglue' / 'jnli-valid-v1.3.json'}" in out
    monkeypatch.delenv("FACTORY_EVAL_DATA")
    rc, err = _cli(tmp_path, capsys, llama_dir, harness={})
    cache = tmp_path / "cache" / "jp-model-factory" / "eval-data"
    assert rc == 2 and err == [f"error: eval data folder not found: eval.data_dir unset, FACTORY_EVAL_DATA unset, "
                               f"cache {cache} (not fetched); run `python -m factory.evaldata fetch` (offline: "
                               "`python -m factory.evaldata fetch --from MIRROR`) or point eval.data_dir or "
                               "FACTORY_EVAL_DATA at a copy"]


def test_bad_benchmark_input_is_one_line(llama_dir, eval_data, tmp_path, capsys):
    rc, err = _cli(tmp_path, capsys, llama_dir, data_dir=str(tmp_path / "absent"), harness={})
    assert rc == 2 and len(err) == 1 and err[0].startswith(
        f"error: eval data folder not found: eval.data_dir={tmp_path / 'absent'} (no such folder), FACTORY_EVAL_DATA "
        "(not read), cache ")
    assert "python -m factory.evaldata fetch" in err[0]
    rc, err = _cli(tmp_path, capsys, llama_dir, data_dir=str(eval_data), harness={"tasks": ["jcqa"]})
    assert rc == 2 and err == [f"error: {tmp_path / 'eval.yaml'}: eval.harness.tasks=jcqa: not a task (supported: "
                               "jcommonsenseqa, jnli, jsts, jsquad)"]
    url = f"http://127.0.0.1:{free_port()}/v1"
    rc, err = _cli(tmp_path, capsys, llama_dir, data_dir=str(eval_data), harness={"limit": 1}, mt_bench={
        "judge": {"base_url": url, "model": "gpt-4", "max_retries": 0}})
    assert rc == 1 and len(err) == 1
    assert err[0].startswith(f"error: eval.mt_bench.judge: the judge at {url} does not answer: ")
    assert not (tmp_path / "run" / "eval" / "report.json").exists()


def test_hand_off_command_survives_the_shell_and_lm_eval_reads_the_path(tmp_path, monkeypatch):
    """A folder with a space, a comma, `=`, a quote and `$`: bash passes the words lm-eval's own parser reads."""
    import subprocess
    import sys

    from lm_eval._cli import HarnessCLI

    from factory.posttrain.evaluate import benchmark_commands

    folder = tmp_path / "my models" / "a,b=c'd$HOME"
    command = benchmark_commands(folder, "run one", "japanese_leaderboard")["lm-evaluation-harness"]
    printer = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    words = json.loads(subprocess.run(["bash", "-c", command.replace("lm_eval", printer, 1)], capture_output=True,
                                      text=True, check=True).stdout)
    monkeypatch.setattr(sys, "argv", ["lm_eval", *words])
    args = HarnessCLI().parse_args()
    assert args.model_args == {"pretrained": str(folder.resolve()), "dtype": "bfloat16"}
    assert args.output_path == "results/run one" and args.tasks == ["japanese_leaderboard"]
