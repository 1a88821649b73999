"""scripts/gpu_bundle.sh: the cp312 bundle stays under its limit, and the same wheel list, installed to a target
folder, is all the GPU tier imports beyond what a bare node has (Python + torch + transformers)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.conftest import bundle

ROOT = Path(__file__).resolve().parents[2]
BARE_NODE = ("torch", "triton", "transformers")
"""What a bare GPU node brings, with their declared dependencies (CUDA builds of torch depend on triton; this
machine's CPU build does not declare it)."""
FACTORY_PACKAGES = ("doctor", "model", "runtime", "train", "upcycle", "convert")
"""Every module of the packages the GPU tier runs (the upcycle and export stages, pretrain, model, runtime)."""
FUNCTION_LOCAL = ("transformers.AutoModelForCausalLM", "sentencepiece", "xxhash", "rich.progress", "rich.logging")
"""Third-party modules the tier's code imports inside functions (megatron.core ones are found by grep)."""


def test_cp312_bundle_is_under_its_limit_and_prints_the_install_line():
    dest, out = bundle("3.12")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    assert any(name.startswith("megatron_core-0.19.2-cp312-cp312-manylinux") for name in wheels), wheels
    assert any(name.startswith("pydantic_core-") and "cp312" in name for name in wheels), wheels
    assert sum(p.stat().st_size for p in dest.glob("*.whl")) < 40 * 2**20
    assert "pip install --no-index --no-deps --target DIR" in out


def _requirements_closure(names: tuple[str, ...]) -> set[str]:
    """The distributions `names` need, transitively, without extras (what a node with them installed has)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[\s;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional platform dependency this machine does not have
        seen.add(name)
        todo += [r for r in requires if "extra ==" not in r and "platform_system" not in r]
    return seen


def _bare_node(folder: Path, bundled: set[str]) -> Path:
    """A folder of links to this environment's copies of the bare node's distributions (code and metadata),
    leaving out those the bundle brings (here transformers' newer dependencies pull in pydantic and rich; the
    node's own transformers does not)."""
    folder.mkdir()
    for name in _requirements_closure(BARE_NODE) - bundled:
        dist = importlib.metadata.distribution(name)
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if (site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


def _megatron_modules() -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "factory").rglob("*.py"))
    return sorted(set(re.findall(r"^\s*(?:from|import) (megatron\.core[\w.]*)", text, flags=re.M)))


def _factory_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for package in FACTORY_PACKAGES
                  for p in (ROOT / "factory" / package).rglob("*.py") if p.name != "__main__.py")


def _run_bare(paths: list[Path], code: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -S` (no site-packages) with only `paths` importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, "-S", *code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_gpu_tier_imports_from_a_target_install_on_a_bare_node(this_python_bundle, doctor_cpu_data, tmp_path):
    dest = this_python_bundle  # this interpreter's wheels, the same list
    target = tmp_path / "target"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                              "--ignore-requires-python", "--target", str(target), *map(str, sorted(dest.glob("*.whl")))],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    bundled = {p.name.split("-")[0].lower().replace("_", "-") for p in dest.glob("*.whl")}
    bare = _bare_node(tmp_path / "bare", bundled)

    without = _run_bare([bare, ROOT], ["-c", "import pydantic"], tmp_path)
    assert "No module named 'pydantic'" in without.stderr  # this environment's site-packages are out of reach

    modules = _factory_modules() + _megatron_modules() + [m for m in FUNCTION_LOCAL if "." not in m or
                                                           not m.split(".")[-1][0].isupper()]
    # Every one-process check of the CPU tier on the prepared folder, as on the node (tests/doctor runs the others);
    # bf16 training and GPU memory skip without CUDA.
    script = (f"import importlib, pathlib\nfor m in {modules!r}: importlib.import_module(m)\n"
              "from transformers import AutoModelForCausalLM\n"
              "from factory.doctor.checks import DoctorContext, run_checks\n"
              "from factory.doctor.tiers import TIERS\nfrom factory.doctor.shapes import CPU\n"
              "checks = [c for c in TIERS['cpu'][1] if c.devices == 1]\n"
              f"context = DoctorContext('cpu', CPU, pathlib.Path('work'), pathlib.Path({str(doctor_cpu_data)!r}))\n"
              "results = run_checks(checks, context)\n"
              "print([(r.name, r.status, r.figure) for r in results])\n"
              "assert all(r.status == 'pass' or r.name in ('precision_agreement', 'memory_plan') for r in results)\n")
    proc = _run_bare([target, bare, ROOT], ["-c", script], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    skipped = _run_bare([target, bare, ROOT], ["-m", "factory.doctor", "--tier", "gpu", "--out", str(tmp_path / "o")],
                        tmp_path)
    if not skipped.stdout.count("skipped: no CUDA device"):
        pytest.fail(skipped.stdout + skipped.stderr[-3000:])
    assert skipped.returncode == 0
