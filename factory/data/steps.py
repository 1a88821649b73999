"""The data stage as datatrove steps: read+filter, exact dedup, MinHash signature/bucket/cluster/filter, write.

Each step is one datatrove pipeline with a task count; a step starts when the one before has finished every
task, so dedup is exact across all tasks (shards). Task i of the per-input steps works on input i.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tqdm
from datatrove.pipeline.dedup import exact_dedup
from datatrove.pipeline.dedup import minhash as minhash_steps
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter

from factory.data.blocks import (
    CharacterMinhashSignature,
    CorpusReader,
    KeptWriter,
    RejectedWriter,
    ShardReader,
    WellFormed,
    filter_blocks,
    input_priority,
    normalized_text,
    shard_writer,
)
from factory.data.config import DataConfig, DedupConfig
from factory.data.shards import failures_dir

for _module in (exact_dedup, minhash_steps):
    # Their progress bars would cut into the stage's log; each step logs its start instead.
    _module.tqdm = partial(tqdm.tqdm, disable=True)


@dataclass
class Step:
    """One datatrove pipeline of the data stage and how many tasks it runs."""

    name: str
    pipeline: list
    tasks: int


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= num_perm that minimize false positives + false negatives at the
    Jaccard threshold (the choice datasketch's MinHashLSH makes)."""
    def candidate(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
        return 1 - (1 - s ** rows) ** bands

    below, above = np.linspace(0, threshold, 201), np.linspace(threshold, 1, 201)
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = 0.5 * np.trapezoid(candidate(below, bands, rows), below) + \
                0.5 * np.trapezoid(1 - candidate(above, bands, rows), above)
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def minhash_config(cfg: DedupConfig) -> MinhashConfig:
    bands, rows = lsh_bands(cfg.threshold, cfg.num_perm)
    return MinhashConfig(n_grams=cfg.shingle_size, num_buckets=bands, hashes_per_bucket=rows, seed=cfg.seed)


def data_steps(data_config: DataConfig, work: Path) -> list[Step]:
    """The steps in order; `work` holds the intermediate shards, `work/kept` and `work/rejected/<reason>`."""
    inputs = [{"path": str(i.path), "format": i.format, "text_field": i.text_field or data_config.text_field,
               "japanese": i.japanese} for i in data_config.inputs]
    tasks, rejected = len(inputs), work / "rejected"
    exact = ExactDedupConfig(content_getter=normalized_text, document_priority=input_priority)
    read = [CorpusReader(inputs, data_config.text_unit, failures_dir(work)),
            WellFormed(exclusion_writer=RejectedWriter(rejected)),
            *filter_blocks(data_config, rejected), shard_writer(work / "filtered")]
    if not data_config.dedup.exact:
        steps, survivors = [Step("filter", read, tasks)], work / "filtered"
    else:
        steps = [Step("filter", read + [ExactDedupSignature(str(work / "exact_sigs"), exact)], tasks),
                 Step("exact_find", [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact)], 1)]
        survivors = work / "unique"
    if not data_config.dedup.near:
        if data_config.dedup.exact:
            steps.append(Step("exact_filter", [ShardReader(work / "filtered"), _exact_filter(work, exact, rejected),
                                               KeptWriter(work / "kept")], tasks))
        else:
            steps[0].pipeline[-1] = KeptWriter(work / "kept")
        return steps
    minhash = minhash_config(data_config.dedup)
    signature = [CharacterMinhashSignature(str(work / "minhash_sigs"), minhash)]
    if data_config.dedup.exact:
        steps.append(Step("exact_filter", [ShardReader(work / "filtered"), _exact_filter(work, exact, rejected),
                                           shard_writer(survivors), *signature], tasks))
    else:
        steps[0].pipeline += signature
    near = RejectedWriter(rejected, "near_dup", "near duplicate (MinHash cluster {minhash_cluster_id})")
    steps += [
        Step("minhash_buckets", [MinhashDedupBuckets(str(work / "minhash_sigs"), str(work / "minhash_buckets"),
                                                     config=minhash)], minhash.num_buckets),
        Step("minhash_cluster", [MinhashDedupCluster(str(work / "minhash_buckets"), str(work / "minhash_remove"),
                                                     config=minhash, save_cluster_id=True)], 1),
        Step("minhash_filter", [ShardReader(survivors), MinhashDedupFilter(str(work / "minhash_remove"), near,
                                                                           load_cluster_ids=True),
                                KeptWriter(work / "kept")], tasks),
    ]
    return steps


def _exact_filter(work: Path, exact: ExactDedupConfig, rejected: Path) -> ExactDedupFilter:
    return ExactDedupFilter(str(work / "exact_dups"), exact,
                            exclusion_writer=RejectedWriter(rejected, "exact_dup", "normalized text seen before"))
