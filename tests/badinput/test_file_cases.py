"""Bad post-training rows, eval prompts and damaged HF model files: one line naming the file (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory import stage
from factory.errors import FactoryError
from tests.badinput.conftest import DEMO, assert_one_clear_line, run_main, snapshot

# ---- Post-training data and model folders: rows named by file line, degenerate pairs counted.

def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n"
                            for x in lines), encoding="utf-8")
    return path


GOOD_SFT = {"messages": [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"}]}
PAIR = {"prompt": "首都は？", "chosen": "東京です。", "rejected": "大阪です。"}
SAME = {"prompt": "首都は？", "chosen": "東京です。", "rejected": "東京です。"}

POSTTRAIN_CASES = [
    ("sft", [GOOD_SFT, GOOD_SFT, '{"messages": [}'], ":3: invalid JSON"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user", "content": "質問"}]}], ":2: no assistant turn"),
    ("sft", [GOOD_SFT, GOOD_SFT, GOOD_SFT, {"messages": "質問"}], ":4: expected a list of messages"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user"}]}], ":2: every message needs"),
    ("sft", [{"question": "q", "answer": "a"}], "columns found: question, answer"),
    ("sft", [], "empty dataset"),
    ("dpo", [SAME, SAME, SAME], "all 3 preference pairs are degenerate"),
    ("dpo", [{**PAIR, "chosen": ""}, {**PAIR, "rejected": ""}], "empty 'chosen'"),
    ("dpo", [PAIR, {**PAIR, "prompt": ""}], ":2: empty 'prompt'"),
    ("dpo", [GOOD_SFT], "expected: prompt+chosen+rejected"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "usr", "content": "質問"}, {"role": "assistant", "content": "答え"}]}],
     ":2: message 0: role 'usr' is not one of system, user, assistant"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user", "content": "質問"}, {"role": "assistant", "content": " "}]}],
     ":2: message 1: empty assistant turn"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "assistant", "content": "答え"}, {"role": "user", "content": "質問"}]}],
     ":2: message 0: assistant as the first turn (expected system or user)"),
    ("sft", [GOOD_SFT, {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                     {"role": "assistant", "content": "c"}]}], ":2: message 1: user after a user turn"),
    ("sft", [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
             {"conversations": [{"from": "humn", "value": "q"}, {"from": "gpt", "value": "a"}]}],
     ":2: ShareGPT turns need 'from' in"),
    ("sft", [GOOD_SFT, GOOD_SFT, "[1, 2]"], ":3: expected a JSON object, got list"),
    ("dpo", [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
              "rejected": [{"role": "asistant", "content": "b"}]}, PAIR], ":1: message 1: role 'asistant'"),
]


@pytest.mark.parametrize(("verb", "lines", "names"), POSTTRAIN_CASES, ids=[f"{v}:{n}" for v, _, n in POSTTRAIN_CASES])
def test_posttrain_data_case(tmp_path, verb, lines, names):
    from factory.posttrain.config import DatasetSpec
    from factory.posttrain.data import RowPolicy, load_mixture

    path = _jsonl(tmp_path / "rows.jsonl", lines)
    with pytest.raises(FactoryError) as info:
        load_mixture([DatasetSpec(path=path)], RowPolicy(verb), seed=0)
    assert len(info.value.lines()) == 1 and str(path) in str(info.value) and names in str(info.value), str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_degenerate_pairs_are_rejected_with_a_count(tmp_path, caplog):
    from factory.posttrain.config import DatasetSpec
    from factory.posttrain.data import RowPolicy, load_mixture

    path = _jsonl(tmp_path / "pairs.jsonl", [PAIR, SAME, {**PAIR, "rejected": ""}, PAIR])
    dataset = load_mixture([DatasetSpec(path=path)], RowPolicy("dpo"), seed=0).dataset
    assert len(dataset) == 2 and all(row["chosen"] != row["rejected"] for row in dataset)
    assert f"rejected 2 of 4 degenerate pairs (first {path}:2: chosen equals rejected)" in caplog.text


EVAL_PROMPT_CASES = [
    ([{"prompt": "質問"}, {"prompt": 42}], ":2: 'prompt' must be a string, got int"),
    ([{"messages": "質問"}], ":1: 'messages' must be a list"),
    ([{"prompt": "a"}, {"prompt": "b"}, {"question": "c"}], ":3: needs 'prompt' or 'messages'; keys found: question"),
    ([], "empty"),
]


@pytest.mark.parametrize(("lines", "names"), EVAL_PROMPT_CASES, ids=[n for _, n in EVAL_PROMPT_CASES])
def test_eval_prompts_case(tmp_path, lines, names):
    from factory.posttrain.evaluate import read_prompts

    path = _jsonl(tmp_path / "prompts.jsonl", lines)
    with pytest.raises(FactoryError) as info:
        read_prompts(path)
    assert len(info.value.lines()) == 1 and f"{path}" in str(info.value) and names in str(info.value), str(info.value)


@pytest.fixture(scope="session")
def shard(tmp_path_factory) -> Path:
    """A two-tensor safetensors file."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("shard") / "model.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.ones(64, 64)}, str(path))
    return path


def test_truncated_config_json_names_the_file(tmp_path):
    from factory.convert.hf_import import read_hf_config

    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_si')
    with pytest.raises(FactoryError, match=f"^{tmp_path / 'config.json'}:1: not valid JSON"):
        read_hf_config(tmp_path)


@pytest.mark.parametrize("config_json", ['{"model_type": "llama", "hidden_si', None], ids=["truncated", "absent"])
def test_import_of_a_damaged_model_folder(prepared, capsys, tmp_path, config_json):
    """The import verb on a folder whose config.json is cut short or absent: one line naming it."""
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    if config_json is not None:
        (hf_dir / "config.json").write_text(config_json)
    before = snapshot(prepared)
    code, err = run_main(capsys, stage.main, ["import", "--config", DEMO, f"run.dir={prepared / 'run'}",
                                              f"hf_import.hf_dir={hf_dir}"])
    assert_one_clear_line(code, err, str(hf_dir / "config.json") if config_json else f"hf_dir={hf_dir}")
    assert snapshot(prepared) == before and [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_tokenizer_folder_without_a_vocabulary(tmp_path):
    from factory.hf import tokenizer_files

    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    with pytest.raises(FactoryError, match=f"^{tmp_path}: no tokenizer vocabulary"):
        tokenizer_files.read(tmp_path)


def test_truncated_index_names_the_file(tmp_path):
    from factory.convert.hf_io import INDEX, LazyReader

    (tmp_path / INDEX).write_text('{"weight_map": {"a": "model-0')
    with pytest.raises(FactoryError, match=f"^{tmp_path / INDEX}:1: not a safetensors index"):
        LazyReader(tmp_path)


@pytest.mark.parametrize("keep", [4, 200, 64 * 64 * 4 + 200], ids=["in-length", "in-header", "in-tensor-b"])
def test_truncated_shard_names_the_file(shard, tmp_path, keep):
    from factory.convert.hf_io import LazyReader

    damaged = tmp_path / "model.safetensors"
    damaged.write_bytes(shard.read_bytes()[:keep])
    with pytest.raises(FactoryError, match=f"^{damaged}: (not a safetensors file|truncated at tensor)"):
        reader = LazyReader(tmp_path)
        for name in reader.keys():
            reader.get(name)
