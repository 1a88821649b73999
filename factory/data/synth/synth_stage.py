"""The `synth` stage: persona x seed document completions from a chat endpoint, then optional DPO pairs.

Resumable: rerunning with the same config skips every record id already in the output files.
"""

from __future__ import annotations

import os

from factory.config_base import CoreConfig
from factory.data.synth.client import ChatClient
from factory.data.synth.config import SynthConfig
from factory.data.synth.generate import JsonlLog, generate
from factory.data.synth.judge import judge_pairs
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.stage_api import Plan, SectionSpec, Stage

SAMPLES = "samples.jsonl"
PAIRS = "preference.jsonl"
UNDECIDED = "preference_undecided.jsonl"


def plan(cfg: CoreConfig) -> Plan:
    sc = STAGE.section_of(cfg)
    out = sc.output_dir or cfg.stage_dir("synth")
    reads = [sc.seeds.path] + ([sc.personas_file] if sc.personas_file else [])
    problems = [f"synth: input not found: {p}" for p in reads if not p.is_file()]
    if sc.api_key_env and not os.environ.get(sc.api_key_env):
        problems.append(f"synth.api_key_env={sc.api_key_env}: environment variable is not set")
    if problems:
        raise ConfigError(problems)
    writes = [out / SAMPLES] + ([out / PAIRS, out / UNDECIDED] if sc.preference.enabled else [])
    notes = [f"endpoint {sc.base_url} model {sc.model}; tasks {', '.join(sc.tasks)}; "
             f"{sc.samples_per_prompt} sample(s) per prompt; resumes from existing {SAMPLES}"]
    return Plan(output_dir=out, reads=reads, writes=writes, notes=notes)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    sc = STAGE.section_of(cfg)
    for path in plan.reads:
        manifest.add_input(path, role="personas" if path == sc.personas_file else "seeds")
    samples = JsonlLog(plan.output_dir / SAMPLES)
    manifest.record(**generate(sc, _client(sc, sc.base_url), samples))
    manifest.add_output(samples.path, role="samples")
    if sc.preference.enabled:
        judge = _client(sc, sc.preference.judge_base_url or sc.base_url)
        pairs, undecided = JsonlLog(plan.output_dir / PAIRS), JsonlLog(plan.output_dir / UNDECIDED)
        for log_file in (pairs, undecided):
            log_file.path.touch()
        manifest.record(**judge_pairs(sc, judge, samples, pairs, undecided))
        manifest.add_output(pairs.path, role="preference")
        manifest.add_output(undecided.path, role="preference_undecided")


def _client(sc: SynthConfig, base_url: str) -> ChatClient:
    return ChatClient(base_url, api_key=os.environ.get(sc.api_key_env) if sc.api_key_env else None,
                      timeout=sc.timeout_seconds, max_retries=sc.max_retries, backoff=sc.backoff_seconds,
                      backoff_max=sc.backoff_max_seconds)


STAGE = Stage(
    name="synth", help="generate synthetic data (persona x seed document) from a chat endpoint",
    sections=(SectionSpec("synth", SynthConfig,
                          "Synthetic data generation (persona x seed document) against a chat endpoint."),),
    plan=plan, run=run, result_sections=("synth",), after=("data",), resumes=True, job_array=True)
