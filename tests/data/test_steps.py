"""The data stage's datatrove steps: LSH bands, dedup that is exact across shards, the dedup switches."""

from __future__ import annotations

import json

import pytest

from factory.config import validate_config
from factory.data.steps import lsh_bands
from factory.registry import STAGES
from factory.runner import run_stage
from tests.data.test_data_stage import DOCS, NEAR, _config, _jsonl, _write_inputs


def test_bands_are_the_ones_datasketch_picks_for_the_threshold():
    assert lsh_bands(0.8, 128) == (9, 13)
    bands, rows = lsh_bands(0.5, 64)
    assert bands * rows <= 64 and (1 / bands) ** (1 / rows) < 0.6


def test_duplicates_in_different_shards_are_removed_and_the_first_copy_kept(tmp_path):
    shards = [[DOCS[0], DOCS[1]], [DOCS[2], "  " + DOCS[1] + "\n"], [NEAR, DOCS[3], DOCS[2]]]
    paths = []
    for i, texts in enumerate(shards):
        path = tmp_path / f"shard-{i}.jsonl"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        paths.append(str(path))
    cfg = validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")},
                           "data": {"inputs": paths, "output_dir": str(tmp_path / "out"), "num_workers": 2}})
    metrics = run_stage(STAGES["data"], cfg).metrics
    assert (metrics["kept"], metrics["rejected.exact_dup"], metrics["rejected.near_dup"]) == (4, 2, 1)
    assert [r["text"] for r in _jsonl(tmp_path / "out" / "kept.jsonl")] == DOCS[:3] + [DOCS[3]]
    rejected = {r["source"]: r["reason"] for r in _jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert rejected == {f"{paths[1]}:2": "exact_dup", f"{paths[2]}:3": "exact_dup", f"{paths[2]}:1": "near_dup"}


@pytest.mark.parametrize(("exact", "near", "expected"), [
    (True, False, {"kept": 7, "rejected.exact_dup": 1}),
    (False, True, {"kept": 6, "rejected.near_dup": 2}),  # the exact copy is a near duplicate too
    (False, False, {"kept": 8}),
])
def test_switches_turn_each_dedup_off(tmp_path, exact, near, expected):
    ja, en = _write_inputs(tmp_path)
    metrics = run_stage(STAGES["data"], _config(tmp_path, ja, en, dedup={"exact": exact, "near": near})).metrics
    assert {k: v for k, v in metrics.items() if k == "kept" or k.endswith("_dup")} == expected


def test_parquet_and_datasets_folders_keep_their_rows_fields(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [11, 12], "body": DOCS[:2], "score": [0.5, 0.9]}), tmp_path / "a.parquet")
    datasets.Dataset.from_dict({"body": DOCS[2:], "lang": ["ja", "ja"]}).save_to_disk(str(tmp_path / "hf"))
    cfg = validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")},
                           "data": {"inputs": [str(tmp_path / "a.parquet"), str(tmp_path / "hf")], "text_field": "body",
                                    "output_dir": str(tmp_path / "out"), "num_workers": 2}})
    run_stage(STAGES["data"], cfg)
    kept = _jsonl(tmp_path / "out" / "kept.jsonl")
    assert kept[:2] == [{"id": 11, "score": 0.5, "text": DOCS[0], "source": f"{tmp_path / 'a.parquet'}#0"},
                        {"id": 12, "score": 0.9, "text": DOCS[1], "source": f"{tmp_path / 'a.parquet'}#1"}]
    assert [(r["lang"], r["text"], r["source"]) for r in kept[2:]] == [
        ("ja", DOCS[2], f"{tmp_path / 'hf'}#0"), ("ja", DOCS[3], f"{tmp_path / 'hf'}#1")]
