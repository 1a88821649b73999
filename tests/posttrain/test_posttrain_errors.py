"""Bad input: one line naming what was found and what was expected, before any training."""

from __future__ import annotations

import json

import pytest
from transformers import BertConfig

from factory.errors import CheckpointError, ConfigError, DataError, FactoryError
from factory.runner import run_stage
from factory.registry import STAGES
from tests.posttrain.conftest import DPO_DATA, SFT_DATA, copy_model, post_config

TRAIN = {"learning_rate": 1e-3, "max_steps": 1, "global_batch_size": 1, "max_length": 64}


def _error(tmp_path, stage: str, model, datasets) -> FactoryError:
    cfg = post_config(tmp_path, **{stage: {**TRAIN, "model": str(model), "datasets": datasets}})
    with pytest.raises(FactoryError) as info:
        run_stage(STAGES[stage], cfg)
    assert len(info.value.lines()) == 1, info.value.lines()
    return info.value


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_wrong_columns_name_found_and_expected(llama_dir, tmp_path):
    bad = _jsonl(tmp_path / "qa.jsonl", [{"question": "日本の首都は？", "answer": "東京です。"}])
    e = _error(tmp_path, "sft", llama_dir, [{"path": bad}])
    assert isinstance(e, DataError)
    assert str(e) == (f"{bad}: columns found: question, answer; "
                      "expected: messages | conversations (ShareGPT from/value) | prompt+completion")
    e = _error(tmp_path, "dpo", llama_dir, SFT_DATA[:1])
    assert str(e).endswith("columns found: messages; expected: prompt+chosen+rejected")
    e = _error(tmp_path, "sft", llama_dir, [{"path": bad, "format": "sharegpt"}])
    assert str(e) == f"{bad}: format 'sharegpt' needs columns conversations; columns found: question, answer"


def test_empty_dataset(llama_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    e = _error(tmp_path, "dpo", llama_dir, [{"path": str(empty)}])
    assert isinstance(e, DataError) and str(e) == f"{empty}: empty dataset (no rows)"


def test_missing_chat_template(llama_dir, tmp_path):
    model = copy_model(llama_dir, tmp_path / "no-template")
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    e = _error(tmp_path, "sft", model, SFT_DATA)
    assert isinstance(e, ConfigError) and "has no chat template" in str(e) and str(model) in str(e)


def test_template_without_generation_markers_refuses_assistant_only_loss(llama_dir, tmp_path):
    model = copy_model(llama_dir, tmp_path / "plain-template")
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    e = _error(tmp_path, "sft", model, SFT_DATA)
    assert isinstance(e, ConfigError) and "no {% generation %} markers" in str(e)


def test_folder_that_is_not_a_causal_lm(tmp_path):
    bert = tmp_path / "bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(bert)
    e = _error(tmp_path, "dpo", bert, DPO_DATA)
    assert isinstance(e, CheckpointError) and str(e).startswith(f"{bert}: not a causal LM (model_type=bert, "
                                                                "architectures=BertForMaskedLM)")
    e = _error(tmp_path, "sft", tmp_path, SFT_DATA)
    assert str(e) == f"{tmp_path}: not a Hugging Face model folder (no config.json)"
