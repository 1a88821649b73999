"""The `synth` stage: persona x seed document completions from a chat endpoint (or a teacher model it serves
on loopback for its duration), optional judged DPO pairs, and the records as training data.

Resumable: rerunning with the same config skips every record id already in the output files; the training
data (factory/synth/training_data.py) is rewritten from all records on every run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from factory import outputs
from factory.config_base import CoreConfig
from factory.endpoints.client import ChatClient
from factory.endpoints.server import ChatServer, HFBackend
from factory.errors import ConfigError, missing_inputs
from factory.jsonl_log import JsonlLog
from factory.manifest import RunManifest
from factory.stage_api import Plan, SectionSpec, Stage
from factory.synth import training_data as td
from factory.synth.config import SynthConfig
from factory.synth.generate import SAMPLE_FIELDS, generate
from factory.synth.judge import PAIR_FIELDS, UNDECIDED_FIELDS, judge_pairs

SAMPLES = "samples.jsonl"
PAIRS = "preference.jsonl"
UNDECIDED = "preference_undecided.jsonl"
log = logging.getLogger(__name__)


def plan(cfg: CoreConfig) -> Plan:
    synth = STAGE.section_of(cfg)
    out = outputs.synth(cfg).dir
    reads = ([synth.seeds.path] + ([synth.personas_file] if synth.personas_file else [])
             + ([synth.teacher] if synth.teacher else []))
    if synth.training is not None:
        reads.append(_tokenizer_model(cfg, synth))
    problems = missing_inputs("synth", reads)
    if synth.serve is not None and synth.base_url is None:
        problems.append(f"synth.serve: the vLLM server of {synth.serve.model} is started by the stage's Slurm job "
                        "(python -m factory.launch slurm synth); to run here, give synth.base_url and synth.model")
    if synth.api_key_env and not os.environ.get(synth.api_key_env):
        problems.append(f"synth.api_key_env={synth.api_key_env}: environment variable is not set")
    if problems:
        raise ConfigError(problems)
    writes = [out / SAMPLES] + ([out / PAIRS, out / UNDECIDED] if synth.preference.enabled else [])
    teacher = (f"teacher {synth.teacher} served on 127.0.0.1" if synth.teacher
               else f"endpoint {synth.base_url} model {synth.model}")
    notes = [f"{teacher}; tasks {', '.join(synth.tasks)}; {synth.samples_per_prompt} sample(s) per prompt; "
             f"resumes from existing {SAMPLES}"]
    if synth.training is not None:
        writes += [out / n for n in (td.PRETRAINING, td.PRETRAINING_REJECTED, td.SFT, td.DPO, "blend.json")]
        notes.append(f"training data: pretraining text of {', '.join(synth.training.pretraining_tasks)} (filtered, "
                     f"packed as dataset '{td.PACKED}'), SFT from {', '.join(synth.training.sft_tasks)}, DPO from the "
                     "judged pairs")
    return Plan(output_dir=out, reads=reads, writes=writes, notes=notes)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    synth = STAGE.section_of(cfg)
    for path in plan.reads:
        manifest.add_input(path, role="personas" if path == synth.personas_file else "teacher" if path == synth.teacher
                           else "tokenizer" if path.name == "tokenizer.model" else "seeds")
    with _endpoint(cfg, synth) as synth:
        samples = JsonlLog(plan.output_dir / SAMPLES, SAMPLE_FIELDS)
        manifest.record(**generate(synth, _client(synth, synth.base_url), samples))
        manifest.add_output(samples.path, role="samples")
        if synth.preference.enabled:
            judge = _client(synth, synth.preference.judge_base_url or synth.base_url)
            pairs = JsonlLog(plan.output_dir / PAIRS, PAIR_FIELDS)
            undecided = JsonlLog(plan.output_dir / UNDECIDED, UNDECIDED_FIELDS)
            for log_file in (pairs, undecided):
                log_file.path.touch()
            manifest.record(**judge_pairs(synth, judge, samples, pairs, undecided))
            manifest.add_output(pairs.path, role="preference")
            manifest.add_output(undecided.path, role="preference_undecided")
    if synth.training is not None:
        _training_data(cfg, synth, plan.output_dir, manifest)


@contextlib.contextmanager
def _endpoint(cfg: CoreConfig, synth: SynthConfig) -> Iterator[SynthConfig]:
    """`synth` itself, or, with a teacher, `synth` pointed at the teacher served on loopback until the block ends."""
    if synth.teacher is None:
        yield synth
        return
    from factory.convert.export import as_hf_folder  # torch and transformers: only a served teacher pays

    with as_hf_folder(synth.teacher, runtime_cfg=cfg.runtime, tokenizer_dir=_tokenizer_dir(cfg, synth),
                      run_dir=cfg.run.dir,
                      name=cfg.run.name) as folder:
        name = synth.model or str(synth.teacher)
        server = ChatServer(HFBackend(folder, max(synth.max_tokens, synth.preference.max_tokens)),
                            port=0, model_name=name)
        with server.running() as base_url:
            log.info("synth: teacher %s served at %s", synth.teacher, base_url)
            yield synth.model_copy(update={"base_url": base_url, "model": name})
        log.info("synth: teacher %s stopped", synth.teacher)


def _tokenizer_dir(cfg: CoreConfig, synth: SynthConfig) -> Path:
    """`synth.training.tokenizer_dir`, else the tokenizer stage's output (the teacher's export and the pack)."""
    return (synth.training.tokenizer_dir if synth.training else None) or outputs.tokenizer(cfg).dir


def _tokenizer_model(cfg: CoreConfig, synth: SynthConfig) -> Path:
    return _tokenizer_dir(cfg, synth) / "tokenizer.model"


def _training_data(cfg: CoreConfig, synth: SynthConfig, out: Path, manifest: RunManifest) -> None:
    samples = list(JsonlLog(out / SAMPLES, SAMPLE_FIELDS).records())
    counts = td.pretraining_text(synth.training, samples, out)
    counts |= td.sft_rows(synth.training, samples, out)
    pairs = list(JsonlLog(out / PAIRS, PAIR_FIELDS).records()) if (out / PAIRS).exists() else []
    counts |= td.dpo_rows(synth.training, pairs, out)
    if counts["pretraining_kept"]:
        counts |= td.pack_pretraining(out, _tokenizer_model(cfg, synth))
        manifest.add_output(out / "pack", role="synthetic_pretraining")
    else:
        log.warning("synth: no pretraining text passed the filters; nothing packed")
    manifest.record(**counts)
    for name in (td.PRETRAINING, td.PRETRAINING_REJECTED, td.SFT, td.DPO):
        manifest.add_output(out / name, role=name.removesuffix(".jsonl"))
    log.info("synth: training data: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))


def _client(synth: SynthConfig, base_url: str) -> ChatClient:
    return ChatClient(base_url, api_key=os.environ.get(synth.api_key_env) if synth.api_key_env else None,
                      timeout=synth.timeout_seconds, max_retries=synth.max_retries,
                      backoff=synth.backoff_seconds,
                      backoff_max=synth.backoff_max_seconds)


STAGE = Stage(
    name="synth", help="generate synthetic data (persona x seed document) from a chat endpoint",
    sections=(SectionSpec("synth", SynthConfig,
                          "Synthetic data generation (persona x seed document) against a chat endpoint."),),
    plan=plan, run=run, outputs=outputs.synth, result_sections=("synth",), after=("data", "pretrain"), resumes=True, job_array=True)
