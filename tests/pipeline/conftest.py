"""Fake stage modules for testing the pipeline's orchestration: each writes one file from its inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from factory import registry
from factory.config import load_config
from factory.stage_api import Plan, Stage


class FakeStages:
    """Stand-ins for every verb: `<run.dir>/<verb>/out.txt` = hash of the verb's config section and of
    the outputs (or source text files) it reads. Records each run; `fail` makes a verb raise. Each runs through
    the real runner, which made and marked its output folder before `run`."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.partial: set[str] = set()
        """Verbs that write `partial` into their output folder before they fail (a killed training run)."""
        self.sources = {"tokenizer": root / "tok.txt", "data": root / "corpus.txt"}
        for path in self.sources.values():
            path.write_text("some text\n", encoding="utf-8")

    def stage(self, real: Stage) -> Stage:
        name = real.name

        def plan(cfg) -> Plan:
            return Plan(output_dir=cfg.run.dir / name)

        def run(cfg, plan: Plan, manifest) -> None:
            self.calls.append(name)
            if name in self.partial:
                (plan.output_dir / "partial").write_text("checkpoint in progress")
            if name in self.fail:
                raise self.fail[name]
            reads = [cfg.run.dir / d / "out.txt" for d in real.after if (cfg.run.dir / d).exists()]
            reads += [self.sources[name]] if name in self.sources else []
            h = hashlib.sha256(json.dumps(cfg.to_dict()[real.section], sort_keys=True).encode())
            for path in reads:
                manifest.add_input(path)
                h.update(path.read_bytes())
            plan.output_dir.mkdir(parents=True, exist_ok=True)
            (plan.output_dir / "out.txt").write_text(h.hexdigest(), encoding="utf-8")
            manifest.add_output(plan.output_dir / "out.txt")

        return dataclasses.replace(real, plan=plan, run=run)


@pytest.fixture
def fakes(tmp_path, monkeypatch) -> FakeStages:
    f = FakeStages(tmp_path)
    chain = tuple(f.stage(s) for s in registry.CHAIN)
    monkeypatch.setattr(registry, "CHAIN", chain)
    monkeypatch.setattr(registry, "STAGES", {s.name: s for s in chain})
    return f


@pytest.fixture
def demo_config(tmp_path):
    """The demo config (every section but synth and hf_import) with its run folder in tmp_path."""
    def load(*overrides: str):
        return load_config("configs/demo-cpu.yaml", [f"run.dir={tmp_path / 'run'}", *overrides])
    return load
