"""The lm-eval tasks the eval stage runs, built on the local JGLUE files: lm-evaluation-harness's own
`ja_leaderboard_*` task definitions (their YAML included as it is, only the data source overridden), the
factory's own JSTS task, and the llm-jp-eval protocol's generation tasks.

The local files are turned into the rows the definitions are written for (Rakuten/JGLUE's) and written as JSON
Lines into a work folder, which the tasks read through `datasets`' json loader; nothing comes from a hub.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager

from factory.posttrain import llm_jp_eval
from factory.posttrain.benchmark_config import LEADERBOARD, HarnessConfig
from factory.posttrain.jglue import TASKS, TaskSpec

UPSTREAM_FOLDER = "japanese_leaderboard"
"""The folder of lm-evaluation-harness's tasks/ that holds the Japanese leaderboard's task YAMLs."""
SHOTS_FROM_VALIDATION = "validation (no train split: the other validation examples)"


@dataclass(frozen=True)
class PreparedTask:
    """One task of one protocol, ready for `simple_evaluate`."""

    name: str
    """The task's name in configs (jcommonsenseqa, ...)."""
    protocol: str
    task: Task
    fewshot_split: str
    """Where the shots come from: `train`, or SHOTS_FROM_VALIDATION where the train split is absent."""
    definition: str
    """What defines the prompt: the upstream YAML, the factory's own task, or the protocol and its version."""


@functools.cache
def upstream_tasks() -> TaskManager:
    """lm-evaluation-harness's Japanese leaderboard tasks, indexed from the installed package (only that folder:
    indexing every task takes seconds)."""
    import lm_eval.tasks

    return TaskManager(include_defaults=False, include_path=str(Path(lm_eval.tasks.__file__).parent / UPSTREAM_FOLDER))


def local_splits(spec: TaskSpec, data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The task's rows per split: validation always, train where the eval data folder holds it."""
    splits = {"validation": spec.rows(data_dir / spec.file("validation"))}
    if (data_dir / spec.file("train")).is_file():
        splits["train"] = spec.rows(data_dir / spec.file("train"))
    return splits


def prepare(harness: HarnessConfig, data_dir: Path, work: Path) -> list[PreparedTask]:
    """Every (protocol, task) the config asks for, on the local files; llm-jp-eval only for the tasks it has."""
    out = []
    for name in harness.tasks:
        splits = local_splits(TASKS[name], data_dir)
        for protocol in harness.protocols:
            if protocol == LEADERBOARD:
                out.append(_leaderboard_task(name, splits, harness, work / "lm-eval" / name))
            elif name in llm_jp_eval.TASKS:
                out.append(_llm_jp_eval_task(name, splits, harness.num_fewshot, work / "llm-jp-eval" / name))
    return out


def _leaderboard_task(name: str, splits: dict[str, list[dict]], harness: HarnessConfig, work: Path) -> PreparedTask:
    spec = TASKS[name]
    fields = _data_fields(_write_splits(splits, work), work)
    if harness.num_fewshot is not None:
        fields["num_fewshot"] = harness.num_fewshot
    shots = _shots(splits)
    if spec.upstream is None:
        task = _load({"task": name, **spec.own, **fields})
        return PreparedTask(name, LEADERBOARD, task, shots, "the factory's own task (no leaderboard defines one)")
    yaml_path = upstream_tasks().task_index[spec.upstream].yaml_path
    # The upstream YAML included whole; only the data source (and the shots' split) is overridden.
    task_file = work / f"{spec.upstream}.yaml"
    task_file.write_text(yaml.safe_dump({"include": str(yaml_path), "task": spec.upstream, **fields},
                                        allow_unicode=True, sort_keys=False), encoding="utf-8")
    task = _load(str(task_file))
    if task.OUTPUT_TYPE == "generate_until" and harness.max_gen_tokens:
        task.set_config("generation_kwargs", {"max_gen_toks": harness.max_gen_tokens}, update=True)
    return PreparedTask(name, LEADERBOARD, task, shots, f"lm_eval/tasks/{UPSTREAM_FOLDER}/{yaml_path.name}")


def _llm_jp_eval_task(name: str, splits: dict[str, list[dict]], num_fewshot: int | None,
                      work: Path) -> PreparedTask:
    protocol_splits = {split: llm_jp_eval.samples(name, rows, shuffle=split == "train")
                       for split, rows in splits.items()}
    fields = _data_fields(_write_splits(protocol_splits, work), work)
    task = _load({"task": f"llm_jp_eval_{name}", **llm_jp_eval.task_fields(name, num_fewshot), **fields})
    return PreparedTask(name, llm_jp_eval.PROTOCOL, task, _shots(splits), llm_jp_eval.PROTOCOL_VERSION)


def _shots(splits: dict[str, list[dict]]) -> str:
    return "train" if "train" in splits else SHOTS_FROM_VALIDATION


def _write_splits(splits: dict[str, list[dict]], work: Path) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        files[split] = work / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return files


def _data_fields(files: dict[str, Path], work: Path) -> dict[str, Any]:
    """lm-eval fields pointing a task at the local JSON Lines files. Without a train split the shots come from
    validation, with the scored example left out (lm-eval does so only when the shots' split is the test split)."""
    fields = {"dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
              "validation_split": "validation"}
    if "train" in files:
        return {**fields, "training_split": "train", "fewshot_split": "train"}
    return {**fields, "training_split": None, "fewshot_split": "validation", "test_split": "validation"}


def _load(spec: str | dict[str, Any]) -> Task:
    """One task from a YAML path or an inline config, through lm-eval's own loader."""
    return next(iter(TaskManager(include_defaults=False).load(spec)["tasks"].values()))
