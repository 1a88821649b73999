"""Training data: the pack stage's blend -> megatron.core GPTDatasets -> deterministic micro-batches.

Sample order is a pure function of `consumed_samples`, as in Megatron-LM's pretraining sampler:
global batch i holds samples [i*G, (i+1)*G); data-parallel rank r takes micro-batches of M
consecutive samples at offsets r*M + k*M*DP. Resuming only needs `consumed_samples`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from factory.train.blend import PhaseBlend

if TYPE_CHECKING:  # for annotations only
    from megatron.core.datasets.blended_megatron_dataset_builder import TopLevelDataset

    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer


def build_datasets(blend: PhaseBlend, tokenizer: SentencePieceMegatronTokenizer, seq_length: int, split: str,
                   seed: int, sizes: tuple[int, int, int], cache_dir: Path) -> list[TopLevelDataset | None]:
    """Train/valid/test GPTDatasets (blended by weight) sized to the samples the run will read."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=(blend.prefixes, blend.weights), split=split,
        path_to_cache=str(cache_dir), tokenizer=tokenizer, reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
        mid_level_dataset_surplus=0.005)
    return BlendedMegatronDatasetBuilder(GPTDataset, list(sizes), lambda: True, config).build()


def micro_batches(dataset: TopLevelDataset, start_sample: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                  num_micro_batches: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's micro-batches of the global batch that starts at `start_sample`."""
    for k in range(num_micro_batches):
        first = start_sample + (k * dp_size + dp_rank) * micro_batch_size
        items = [dataset[i] for i in range(first, first + micro_batch_size)]
        yield {key: torch.stack([torch.as_tensor(it[key]) for it in items])
               for key in ("tokens", "labels", "loss_mask", "position_ids")}


def batch_fingerprint(dataset: TopLevelDataset, end_sample: int, global_batch_size: int) -> str:
    """sha256 of the token ids of the global batch that ends at `end_sample` (the last one a run consumed)."""
    h = hashlib.sha256()
    for i in range(max(0, end_sample - global_batch_size), end_sample):
        h.update(np.asarray(dataset[i]["tokens"], dtype=np.int64).tobytes())
    return h.hexdigest()


IDENTITY_KEYS = {"seed": "seed", "split": "split", "seq_length": "model.seq_length"}
"""What a run's training data is built from beside its phases, with the config key each comes from."""


def identity_problems(saved: dict, current: dict, boundary_matches: bool) -> list[str]:
    """Why a resume would read other samples than the run it continues: one line per differing key or phase
    (a phase's blend is the sha256 of its blend.json). A larger train_iters is fine as long as the last
    consumed global batch is still the same data."""
    out = [f"{key} {saved.get(name)!r} when the run started, {current.get(name)!r} now"
           for name, key in IDENTITY_KEYS.items() if saved.get(name) != current.get(name)]
    old, new = saved.get("phases") or [], current.get("phases") or []
    if len(old) != len(new):
        out.append(f"phases: {len(old)} when the run started, {len(new)} now")
    for i, (a, b) in enumerate(zip(old, new)):
        keys = ["name", "blend", "start"] + (["end"] if i < len(new) - 1 else [])
        out += [f"phases[{i}] ({a.get('name')}) {k} {a.get(k)!r} when the run started, {b.get(k)!r} now"
                for k in keys if a.get(k) != b.get(k)]
    if not out and saved.get("train_samples") != current.get("train_samples") and not boundary_matches:
        out.append(f"train_iters: a dataset built for {current.get('train_samples')} samples (was "
                   f"{saved.get('train_samples')}) orders them differently, so the samples already consumed "
                   "would not be the ones the run continues from")
    return out
