"""The shared run folder and the checks every bad-input case makes: exit != 0, one line naming the key or
path, no traceback, nothing new in the output location."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factory import stage

DEMO = "configs/demo-cpu.yaml"
SENTENCE = "東京は日本の首都であり、多くの人々が毎日電車で通勤している大きな都市です。"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """One tiny run folder shared by every case: a corpus, a data-stage config and the data stage's output."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "ja.txt").write_text("".join(f"{SENTENCE}{i}番目の文。\n" for i in range(40)), encoding="utf-8")
    config = {"run": {"name": "bad-inputs", "dir": str(root / "run")},
              "runtime": {"device": "cpu", "precision": "fp32", "seed": 1},
              "data": {"inputs": [{"path": str(root / "ja.txt")}], "text_unit": "line", "num_workers": 1}}
    (root / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert stage.main(["data", "--config", str(root / "data.yaml")]) == 0
    assert (root / "run" / "data" / "manifest.json").is_file()
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, modification time) and folder under `folder`, hidden ones too. A folder is recorded by
    being there, with its entries: the lock a stage makes beside its output and removes again changes the
    folder's mtime, not what it holds."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
            for p in folder.rglob("*")}


def assert_one_clear_line(code: int, stderr: str, names: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "stopped: "))]
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    assert names in errors[0], errors[0]


def run_main(capsys, main, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err
