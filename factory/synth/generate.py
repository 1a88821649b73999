"""Persona x seed x task x sample jobs with deterministic ids, run concurrently, appended durably, resumable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

from factory.endpoints.client import ChatClient, bounded_map
from factory.errors import DataError
from factory.jsonl_log import JsonlLog, record_id
from factory.records import read_records
from factory.synth.config import SeedDocs, SynthConfig
from factory.synth.prompts import TEMPLATES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One completion to request; `group` is shared by the samples of one prompt."""

    id: str
    group: str
    persona: str
    seed_id: str
    task: str
    sample: int
    template: str
    messages: list[dict[str, str]]


def load_personas(synth_config: SynthConfig) -> list[str]:
    if synth_config.personas_file is None:
        return list(synth_config.personas)
    if not synth_config.personas_file.is_file():
        raise DataError(f"{synth_config.personas_file}: personas file not found")
    lines = (r.text.strip() for r in read_records(synth_config.personas_file, fmt="text", text_unit="line"))
    personas = list(dict.fromkeys(ln for ln in lines if ln))
    if not personas:
        raise DataError(f"{synth_config.personas_file}: no personas (expected one per line)")
    return personas


def load_seeds(sd: SeedDocs) -> list[tuple[str, str]]:
    """(id, text) of each seed document; malformed records and duplicate ids are errors naming file:line."""
    seeds: dict[str, str] = {}
    if not sd.path.exists():
        raise DataError(f"{sd.path}: seed documents not found")
    for rec in read_records(sd.path, sd.text_field):
        if sd.limit is not None and len(seeds) >= sd.limit:
            break
        doc_id = rec.data.get(sd.id_field)
        if doc_id is None:
            raise DataError(f"{rec.source}: no '{sd.id_field}' field")
        if str(doc_id) in seeds:
            raise DataError(f"{rec.source}: duplicate {sd.id_field} {doc_id!r}")
        seeds[str(doc_id)] = rec.text
    return list(seeds.items())


def iter_jobs(synth_config: SynthConfig, personas: list[str], seeds: list[tuple[str, str]]) -> Iterator[Job]:
    for seed_id, text in seeds:
        document = text[:synth_config.seeds.max_chars]
        for persona in personas:
            for task in synth_config.tasks:
                tpl = TEMPLATES[task]
                messages = tpl.messages(persona=persona, document=document)
                group = record_id(persona, seed_id, task, tpl.name)
                for sample in range(synth_config.samples_per_prompt):
                    yield Job(record_id(persona, seed_id, task, sample, tpl.name), group, persona, seed_id,
                              task, sample, tpl.name, messages)


SAMPLE_FIELDS = {"text": str, "prompt": str, "task": str, "group": str, "sample": int}
"""What the training data and the judge read from each sample."""


def generate(synth_config: SynthConfig, client: ChatClient, out: JsonlLog) -> dict[str, int | str]:
    """Run every job not yet in `out`, streaming jobs so memory does not grow with the run."""
    personas, seeds = load_personas(synth_config), load_seeds(synth_config.seeds)
    planned = len(personas) * len(seeds) * len(synth_config.tasks) * synth_config.samples_per_prompt
    out.path.parent.mkdir(parents=True, exist_ok=True)
    done = out.done_ids()
    todo = (job for job in iter_jobs(synth_config, personas, seeds) if job.id not in done)
    log.info("synth: %d jobs (%d personas x %d seeds x %d tasks x %d samples), %d in %s already",
             planned, len(personas), len(seeds), len(synth_config.tasks), synth_config.samples_per_prompt, len(done),
             out.path)

    def call(job: Job) -> str:
        return client.complete(synth_config.model, job.messages, synth_config.temperature, synth_config.max_tokens,
                               seed=int(job.id[:8], 16))

    generated = 0
    for job, text in bounded_map(call, todo, synth_config.concurrency):
        out.append(_record(job, text, synth_config.model))
        generated += 1
    return {"jobs_planned": planned, "jobs_resumed": planned - generated, "jobs_generated": generated,
            "samples_skipped_unusable": out.skipped,
            "personas": len(personas), "seed_docs": len(seeds),
            "templates": ",".join(TEMPLATES[t].name for t in synth_config.tasks)}


def _record(job: Job, text: str, model: str) -> dict[str, Any]:
    return {"id": job.id, "text": text, "prompt": job.messages[-1]["content"], "task": job.task,
            "persona": job.persona, "seed_id": job.seed_id, "sample": job.sample, "group": job.group,
            "template": job.template, "model": model}
