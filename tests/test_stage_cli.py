"""The stage CLI: verbs, dry-run, one-line errors and exit codes."""

import subprocess
import sys


from factory.registry import STAGES
from factory.stage import main

VERBS = "tokenizer data pack pretrain synth upcycle import cpt export sft dpo eval".split()


def test_help_lists_every_verb():
    proc = subprocess.run([sys.executable, "-m", "factory.stage", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for verb in VERBS:
        assert f"    {verb}" in proc.stdout
    assert list(STAGES) == VERBS


def test_bad_config_exits_2_with_one_line_naming_the_key():
    proc = subprocess.run(
        [sys.executable, "-m", "factory.stage", "pretrain", "--config", "configs/demo-cpu.yaml",
         "model.num_attention_heads=7", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") and "num_attention_heads" in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_dry_run_prints_config_and_parameter_counts(capsys):
    code = main(["cpt", "--config", "configs/tanuki-8x8b.yaml", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "num_experts: 8" in out and "# parameters: 46,973.33M total, 13,150.46M active" in out
