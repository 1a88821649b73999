"""A run's own records damaged or unwritable: pipeline.json of another shape, a truncated stage manifest, a report
that cannot be written. Each is one line naming the file, or a re-run with the reason; nothing is deleted."""

from __future__ import annotations

import shutil

import pytest

from factory import pipeline
from factory.run_state import STATE_NAME
from tests.badinput.conftest import assert_one_clear_line, run_main, snapshot


@pytest.fixture
def run(prepared, tmp_path):
    """A copy of the prepared run folder that a pipeline ran once."""
    shutil.copy(prepared / "ja.txt", tmp_path / "ja.txt")
    config = (prepared / "data.yaml").read_text(encoding="utf-8").replace(str(prepared), str(tmp_path))
    (tmp_path / "data.yaml").write_text(config, encoding="utf-8")
    assert pipeline.main(["--config", str(tmp_path / "data.yaml"), "--no-report"]) == 0
    return tmp_path


@pytest.mark.parametrize("text", ["[]", '{"stages": ["data"]}'])
def test_pipeline_json_of_another_shape_is_one_line(run, capsys, text):
    (run / "run" / STATE_NAME).write_text(text)
    before = snapshot(run)
    code, err = run_main(capsys, pipeline.main, ["--config", str(run / "data.yaml"), "--no-report"])
    assert_one_clear_line(code, err, f"{run / 'run' / STATE_NAME}: expected")
    assert snapshot(run) == before


def test_a_truncated_manifest_reruns_its_stage_with_the_reason(run, capsys):
    manifest = run / "run" / "data" / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    capsys.readouterr()
    assert pipeline.main(["--config", str(run / "data.yaml"), "--dry-run"]) == 0
    assert f"data  run   {manifest}: not a valid manifest (" in capsys.readouterr().out
    assert pipeline.main(["--config", str(run / "data.yaml"), "--no-report"]) == 0
    assert '"stage": "data"' in manifest.read_text()


def test_a_report_that_cannot_be_written_is_one_line(run, capsys):
    (run / "run" / "report" / "report.md").mkdir(parents=True)
    code, err = run_main(capsys, pipeline.main, ["--config", str(run / "data.yaml")])
    assert_one_clear_line(code, err, f"report: {run / 'run' / 'report'}")
    assert (run / "run" / "data" / "manifest.json").is_file()
