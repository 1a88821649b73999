"""A clone is the product: the CPU demo's pipeline (as scripts/demo.sh runs it) in a fresh `git clone` of HEAD,
with no eval data anywhere and nothing written outside the clone and this test's temporary folders.

The suite's one full demo run (~3-4 minutes on 2 cores). The clone reuses the built .venv through a symlink; its
editable install points at the checkout it was built from, so the clone's own code is put first on PYTHONPATH
(and checked to be what runs). The demo text is copied from this checkout's data/demo/ when present (git-ignored,
so a clone never has it), else fetched by scripts/fetch_demo_text.sh from the Debian archive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.launch.conftest import DISTRIBUTED_ENV

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEMO_TEXT = ("ja.txt", "en.txt")
"""What scripts/fetch_demo_text.sh writes into data/demo/ (git-ignored)."""
UNSET = ("FACTORY_EVAL_DATA", "FACTORY_EVAL_DATA_MIRROR", "FACTORY_EVAL_DATA_URL", "PYTHONPATH")
"""Where a user's machine might point the factory at eval data, or Python at another checkout."""


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Everything under `folder` (size, mtime), folders too; {} when it is absent."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) if p.is_file() else (0, 0)
            for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture(scope="session")
def demo_clone(tmp_path_factory) -> dict:
    """Clone HEAD, run the demo pipeline in it; the clone, its environment and the finished process."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the suite runs from a git checkout: the test clones its HEAD")
    base = tmp_path_factory.mktemp("demo-clone")
    clone = base / "jp-model-factory"
    _git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone))
    _git("checkout", "--quiet", "--detach", _git("rev-parse", "HEAD"), cwd=clone)
    (clone / ".venv").symlink_to((ROOT / ".venv").resolve(), target_is_directory=True)
    home, cache, config, temp, matplotlib = (base / name for name in ("home", "cache", "config", "tmp", "mpl"))
    for folder in (home, cache, config, temp, matplotlib):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in UNSET + DISTRIBUTED_ENV}
    # matplotlib keeps a font list in its own per-user folder, as any program plotting with it does: that one
    # goes to a folder of the test so that the user's cache is checked for everything else.
    env.update(HOME=str(home), XDG_CACHE_HOME=str(cache), XDG_CONFIG_HOME=str(config), TMPDIR=str(temp),
               MPLCONFIGDIR=str(matplotlib), PYTHONPATH=str(clone))
    python = str(clone / ".venv" / "bin" / "python")
    text = ROOT / "data" / "demo"
    if all((text / name).is_file() and (text / name).stat().st_size for name in DEMO_TEXT):
        (clone / "data" / "demo").mkdir(parents=True)
        for name in DEMO_TEXT:
            shutil.copy2(text / name, clone / "data" / "demo" / name)
    else:
        if shutil.which("apt-get") is None:
            pytest.skip("no data/demo/ text here and no apt-get to fetch it (bash scripts/fetch_demo_text.sh)")
        fetched = subprocess.run(["bash", "scripts/fetch_demo_text.sh"], cwd=clone, env={**env, "PYTHON": python},
                                 capture_output=True, text=True, timeout=900)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr[-3000:]
    where = subprocess.run([python, "-c", "import factory; print(factory.__file__)"], cwd=clone, env=env,
                           capture_output=True, text=True)
    outside = {"home": home, "cache": cache, "config": config, "checkout's run": ROOT / "runs" / "demo-cpu"}
    before = {name: _files(folder) for name, folder in outside.items()}
    proc = subprocess.run([python, "-m", "factory.pipeline", "--config", "configs/demo-cpu.yaml"], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=1800)
    return {"clone": clone, "factory": where.stdout.strip(), "proc": proc, "before": before,
            "after": {name: _files(folder) for name, folder in outside.items()}}


def test_the_clone_runs_its_own_code_at_head(demo_clone):
    clone = demo_clone["clone"]
    assert Path(demo_clone["factory"]) == clone / "factory" / "__init__.py"
    assert _git("rev-parse", "HEAD", cwd=clone) == _git("rev-parse", "HEAD")


def test_the_demo_pipeline_finishes_and_writes_the_report(demo_clone):
    proc, clone = demo_clone["proc"], demo_clone["clone"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = clone / "runs" / "demo-cpu" / "report" / "report.md"
    assert report.is_file() and "report: runs/demo-cpu/report/report.md" in proc.stdout
    assert report.read_text(encoding="utf-8").startswith("# Run report: demo-cpu")


def test_the_eval_manifest_holds_jglue_and_mt_bench_scores_from_the_shipped_rows(demo_clone):
    manifest = json.loads((demo_clone["clone"] / "runs" / "demo-cpu" / "eval" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    for task in ("jcommonsenseqa", "jnli"):
        assert 0.0 <= metrics[f"{task}.acc"] <= 1.0 and metrics[f"{task}.examples"] == 10, task
        assert 0.0 <= metrics[f"llm_jp_eval.{task}.exact_match"] <= 1.0, task
    assert {"mt_bench.overall", "mt_bench.turn1", "mt_bench.turn2"} <= set(metrics)
    assert metrics["mt_bench.questions"] == 3 and metrics["mt_bench.samples"] == 2 and metrics["mt_bench.judged"] > 0
    eval_inputs = [i["path"] for i in manifest["inputs"] if i["role"] == "eval_data"]
    assert eval_inputs and all(path.startswith("configs/demo-data/eval/") for path in eval_inputs), eval_inputs


def test_nothing_is_written_outside_the_clone(demo_clone):
    """Home, the user cache (where `factory.evaldata fetch` installs) and config stay empty; the checkout the
    clone came from gets no run; in the clone, every file written is git-ignored (runs/, data/)."""
    assert demo_clone["after"] == demo_clone["before"]
    assert all(files == {} for name, files in demo_clone["after"].items() if name != "checkout's run")
    clone = demo_clone["clone"]
    assert _git("status", "--porcelain", "--", ".", ":!.venv", cwd=clone) == ""
