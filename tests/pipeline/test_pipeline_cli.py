"""`python -m factory.pipeline`: dry-run listing, one-line stage errors, exit codes."""

from factory.errors import CheckpointError
from factory.pipeline import main


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def args(tmp_path, *extra: str) -> list[str]:
    return ["configs/demo-cpu.yaml", f"run.dir={tmp_path / 'run'}", "--no-report", *extra]


def test_dry_run_lists_every_stage_with_its_reason_and_runs_nothing(fakes, tmp_path, capsys):
    assert main(args(tmp_path, "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines][:3] == [["tokenizer", "run"], ["data", "run"], ["pack", "run"]]
    assert "upstream runs: tokenizer, data" in lines[2]
    assert fakes.calls == [] and not (tmp_path / "run").exists()


def test_a_failing_stage_is_named_and_its_exit_code_returned(fakes, tmp_path, capsys):
    fakes.fail["export"] = CheckpointError("runs/x/cpt/checkpoints: no tracker file")
    assert main(args(tmp_path)) == 1
    assert errors(capsys.readouterr().err) == ["error: stage export: runs/x/cpt/checkpoints: no tracker file"]
    assert fakes.calls[-1] == "export" and (tmp_path / "run" / "cpt" / "out.txt").is_file()


def test_an_unexpected_exception_also_names_the_stage(fakes, tmp_path, capsys):
    fakes.fail["tokenizer"] = RuntimeError("boom")
    assert main(args(tmp_path)) == 1
    assert errors(capsys.readouterr().err) == ["error: stage tokenizer: RuntimeError: boom"]


def test_only_an_unknown_stage_is_a_usage_error(fakes, tmp_path, capsys):
    assert main(args(tmp_path, "--only", "import")) == 2
    assert "--only import: not a stage of this config" in capsys.readouterr().err
    assert fakes.calls == []


def test_a_full_run_writes_the_report(fakes, tmp_path, capsys):
    assert main(["--config", "configs/demo-cpu.yaml", f"run.dir={tmp_path / 'run'}"]) == 0
    report = tmp_path / "run" / "report" / "report.md"
    assert f"report: {report}" in capsys.readouterr().out
    assert "| sft | done |" in report.read_text()
