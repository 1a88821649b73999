"""Multi-phase training data: the blend phases a run follows, the iterations each covers, where a step reads.

A run's phases switch at token counts of the run itself (`phases[i].until_tokens`), rounded up to whole
iterations. Where a step reads is a function of the iteration alone (phase k's sample position is
consumed_samples - start_k x global batch), so a resume on either side of a switch reads what an
uninterrupted run reads; every checkpoint records the phases it was trained with (the data identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import ConfigError
from factory.identity import identity
from factory.train.config import PhaseSpec, TrainConfig
from factory.train.blend import PhaseBlend, read_blend
from factory.train.data import batch_fingerprint, build_datasets

if TYPE_CHECKING:  # for annotations only
    from megatron.core.datasets.blended_megatron_dataset_builder import TopLevelDataset

    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer


@dataclass
class Phase:
    """One phase: a blend phase read from `start` (iterations done before it) to `end` (exclusive)."""

    blend_path: Path
    blend: PhaseBlend
    start: int
    end: int
    dataset: TopLevelDataset | None = None
    """Its training GPTDataset, sized to its iterations."""

    @property
    def name(self) -> str:
        return self.blend.name

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "blend": identity(self.blend_path), "start": self.start, "end": self.end}


def plan_phases(stage: str, train_config: TrainConfig, default_blend: Path, tokens_per_iter: int) -> list[Phase]:
    """The run's phases with their iterations; a ConfigError naming the phase that covers no iteration."""
    specs = train_config.phases or [PhaseSpec(blend_file=train_config.blend_file, phase=train_config.phase)]
    phases: list[Phase] = []
    start = 0
    for i, spec in enumerate(specs):
        path = spec.blend_file or train_config.blend_file or default_blend
        last = i == len(specs) - 1
        end = train_config.train_iters if last else math.ceil(spec.until_tokens / tokens_per_iter)
        if not start < end <= train_config.train_iters:
            raise ConfigError(f"{stage}.phases[{i}].until_tokens={spec.until_tokens}: the phase would cover "
                              f"iterations {start}..{end} of {train_config.train_iters} ({tokens_per_iter:,} tokens "
                              "per iteration); it needs at least one and must end within the run")
        phases.append(Phase(path, read_blend(path, spec.phase), start, end))
        start = end
    return phases


def phase_at(phases: list[Phase], iteration: int) -> Phase:
    """The phase of the step that follows `iteration` completed steps (the phases are contiguous from 0)."""
    return next((p for p in phases if iteration < p.end), phases[-1])


def position(phase: Phase, consumed_samples: int, global_batch_size: int) -> int:
    """The sample of `phase`'s dataset the next step starts at."""
    return consumed_samples - phase.start * global_batch_size


def data_identity(phases: list[Phase], seed: int, split: str, seq_length: int, global_batch_size: int) -> dict:
    return {"phases": [p.identity() for p in phases], "seed": seed, "split": split, "seq_length": seq_length,
            "train_samples": (phases[-1].end - phases[-1].start) * global_batch_size}


def build_phase_datasets(phases: list[Phase], tokenizer: SentencePieceMegatronTokenizer, seq_length: int,
                         split: str, seed: int, global_batch_size: int, valid_samples: int,
                         cache_dir: Path) -> TopLevelDataset | None:
    """Each phase's training dataset (sized to its iterations); returns the validation dataset, which is
    the first phase's validation split so that evaluations stay comparable across the run. Later phases
    train on all of their documents (split 100,0,0): a small synthetic blend has none to spare."""
    valid = None
    for i, phase in enumerate(phases):
        samples = (phase.end - phase.start) * global_batch_size
        train, valid_data, _ = build_datasets(phase.blend, tokenizer, seq_length, split if i == 0 else "100,0,0",
                                              seed, (samples, valid_samples if i == 0 else 0, 0), cache_dir)
        phase.dataset = train
        valid = valid_data if i == 0 else valid
    return valid


def last_batch_fingerprint(phases: list[Phase], iteration: int, consumed_samples: int,
                           global_batch_size: int) -> str | None:
    """The fingerprint of the global batch that ended at `iteration` (None before the first step)."""
    if iteration == 0:
        return None
    phase = phase_at(phases, iteration - 1)
    return batch_fingerprint(phase.dataset, position(phase, consumed_samples, global_batch_size),
                             global_batch_size)
