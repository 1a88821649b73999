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
    sc = STAGE.section_of(cfg)
    out = outputs.synth(cfg).dir
    reads = [sc.seeds.path] + ([sc.personas_file] if sc.personas_file else []) + ([sc.teacher] if sc.teacher else [])
    if sc.training is not None:
        reads.append(_tokenizer_model(cfg, sc))
    problems = missing_inputs("synth", reads)
    if sc.serve is not None and sc.base_url is None:
        problems.append(f"synth.serve: the vLLM server of {sc.serve.model} is started by the stage's Slurm job "
                        "(python -m factory.launch slurm synth); to run here, give synth.base_url and synth.model")
    if sc.api_key_env and not os.environ.get(sc.api_key_env):
        problems.append(f"synth.api_key_env={sc.api_key_env}: environment variable is not set")
    if problems:
        raise ConfigError(problems)
    writes = [out / SAMPLES] + ([out / PAIRS, out / UNDECIDED] if sc.preference.enabled else [])
    teacher = f"teacher {sc.teacher} served on 127.0.0.1" if sc.teacher else f"endpoint {sc.base_url} model {sc.model}"
    notes = [f"{teacher}; tasks {', '.join(sc.tasks)}; {sc.samples_per_prompt} sample(s) per prompt; resumes from "
             f"existing {SAMPLES}"]
    if sc.training is not None:
        writes += [out / n for n in (td.PRETRAINING, td.PRETRAINING_REJECTED, td.SFT, td.DPO, "blend.json")]
        notes.append(f"training data: pretraining text of {', '.join(sc.training.pretraining_tasks)} (filtered, "
                     f"packed as dataset '{td.PACKED}'), SFT from {', '.join(sc.training.sft_tasks)}, DPO from the "
                     "judged pairs")
    return Plan(output_dir=out, reads=reads, writes=writes, notes=notes)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    sc = STAGE.section_of(cfg)
    for path in plan.reads:
        manifest.add_input(path, role="personas" if path == sc.personas_file else "teacher" if path == sc.teacher
                           else "tokenizer" if path.name == "tokenizer.model" else "seeds")
    with _endpoint(cfg, sc) as sc:
        samples = JsonlLog(plan.output_dir / SAMPLES, SAMPLE_FIELDS)
        manifest.record(**generate(sc, _client(sc, sc.base_url), samples))
        manifest.add_output(samples.path, role="samples")
        if sc.preference.enabled:
            judge = _client(sc, sc.preference.judge_base_url or sc.base_url)
            pairs = JsonlLog(plan.output_dir / PAIRS, PAIR_FIELDS)
            undecided = JsonlLog(plan.output_dir / UNDECIDED, UNDECIDED_FIELDS)
            for log_file in (pairs, undecided):
                log_file.path.touch()
            manifest.record(**judge_pairs(sc, judge, samples, pairs, undecided))
            manifest.add_output(pairs.path, role="preference")
            manifest.add_output(undecided.path, role="preference_undecided")
    if sc.training is not None:
        _training_data(cfg, sc, plan.output_dir, manifest)


@contextlib.contextmanager
def _endpoint(cfg: CoreConfig, sc: SynthConfig) -> Iterator[SynthConfig]:
    """`sc` itself, or, with a teacher, `sc` pointed at the teacher served on loopback until the block ends."""
    if sc.teacher is None:
        yield sc
        return
    from factory.convert.export import as_hf_folder  # torch and transformers: only a served teacher pays
    from factory.endpoints.server import ChatServer, HFBackend

    with as_hf_folder(sc.teacher, runtime=cfg.runtime, tokenizer_dir=_tokenizer_dir(cfg, sc), run_dir=cfg.run.dir,
                      name=cfg.run.name) as folder:
        name = sc.model or str(sc.teacher)
        server = ChatServer(HFBackend(folder, max(sc.max_tokens, sc.preference.max_tokens)), port=0, model_name=name)
        with server.running() as base_url:
            log.info("synth: teacher %s served at %s", sc.teacher, base_url)
            yield sc.model_copy(update={"base_url": base_url, "model": name})
        log.info("synth: teacher %s stopped", sc.teacher)


def _tokenizer_dir(cfg: CoreConfig, sc: SynthConfig) -> Path:
    """`synth.training.tokenizer_dir`, else the tokenizer stage's output (the teacher's export and the pack)."""
    return (sc.training.tokenizer_dir if sc.training else None) or outputs.tokenizer(cfg).dir


def _tokenizer_model(cfg: CoreConfig, sc: SynthConfig) -> Path:
    return _tokenizer_dir(cfg, sc) / "tokenizer.model"


def _training_data(cfg: CoreConfig, sc: SynthConfig, out: Path, manifest: RunManifest) -> None:
    samples = list(JsonlLog(out / SAMPLES, SAMPLE_FIELDS).records())
    counts = td.pretraining_text(sc.training, samples, out)
    counts |= td.sft_rows(sc.training, samples, out)
    pairs = list(JsonlLog(out / PAIRS, PAIR_FIELDS).records()) if (out / PAIRS).exists() else []
    counts |= td.dpo_rows(sc.training, pairs, out)
    if counts["pretraining_kept"]:
        counts |= td.pack_pretraining(out, _tokenizer_model(cfg, sc))
        manifest.add_output(out / "pack", role="synthetic_pretraining")
    else:
        log.warning("synth: no pretraining text passed the filters; nothing packed")
    manifest.record(**counts)
    for name in (td.PRETRAINING, td.PRETRAINING_REJECTED, td.SFT, td.DPO):
        manifest.add_output(out / name, role=name.removesuffix(".jsonl"))
    log.info("synth: training data: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))


def _client(sc: SynthConfig, base_url: str) -> ChatClient:
    return ChatClient(base_url, api_key=os.environ.get(sc.api_key_env) if sc.api_key_env else None,
                      timeout=sc.timeout_seconds, max_retries=sc.max_retries, backoff=sc.backoff_seconds,
                      backoff_max=sc.backoff_max_seconds)


STAGE = Stage(
    name="synth", help="generate synthetic data (persona x seed document) from a chat endpoint",
    sections=(SectionSpec("synth", SynthConfig,
                          "Synthetic data generation (persona x seed document) against a chat endpoint."),),
    plan=plan, run=run, outputs=outputs.synth, result_sections=("synth",), after=("data", "pretrain"), resumes=True, job_array=True)
