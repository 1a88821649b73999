"""Regenerate scripts/slurm/*.sbatch from the Tanuki and LLM-jp presets; `--check` exits 1 when one is stale."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "scripts" / "slurm"
COMMON = ["launch.venv=.venv", "launch.cpus_per_task=64"]
"""Every template: the repository's .venv, 8 CPU cores per GPU (whole nodes: the GPU default)."""
TEMPLATES = {
    "tanuki-8b-1node.sbatch": ("pretrain", "configs/tanuki-8b.yaml", ["launch.nodes=1"]),
    "tanuki-8b-4nodes.sbatch": ("pretrain", "configs/tanuki-8b.yaml", ["launch.nodes=4"]),
    "tanuki-8b-16nodes.sbatch": ("pretrain", "configs/tanuki-8b.yaml", ["launch.nodes=16"]),
    "tanuki-8x8b-32nodes.sbatch": ("cpt", "configs/tanuki-8x8b.yaml", ["launch.nodes=32"]),
    "llm-jp-3-172b-64nodes.sbatch": ("pretrain", "configs/llm-jp-3-172b.yaml", ["launch.nodes=64"]),
}
"""File name -> (stage, config relative to the repository root, launch overrides)."""


def render_all() -> dict[str, str]:
    """File name -> script text, rendered as `python -m factory.launch slurm` renders it."""
    sys.path.insert(0, str(ROOT))
    from factory.config import load_config
    from factory.launch.slurm import render

    scripts = {}
    for name, (stage, config, overrides) in TEMPLATES.items():
        args = overrides + COMMON
        scripts[name] = render(load_config(ROOT / config, args), stage, config, args).script
    return scripts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    stale = []
    for name, text in render_all().items():
        path = OUT / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        os.chmod(path, 0o755)
        print(f"wrote {path.relative_to(ROOT)}")
    for name in stale:
        print(f"stale: scripts/slurm/{name}; run python scripts/render_slurm_templates.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
