"""SFT: loss goes down on the MoE folder, only assistant tokens carry loss, the output loads and generates."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from factory.posttrain import model as hf
from factory.posttrain.config import SftConfig
from factory.posttrain.data import RowPolicy, load_mixture
from factory.posttrain.sft_stage import make_trainer
from factory.runner import run_stage
from factory.registry import STAGES
from tests.posttrain.conftest import SFT_DATA, copy_model, post_config

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def test_sft_on_moe_folder_lowers_loss_and_output_loads(mixtral_dir, tmp_path):
    model_in = copy_model(mixtral_dir, tmp_path / "export" / "hf")  # the default input: <run.dir>/export/hf
    cfg = post_config(tmp_path, sft={"datasets": SFT_DATA, "learning_rate": 1e-2, "lr_scheduler": "constant",
                                     "max_steps": 6, "global_batch_size": 2, "micro_batch_size": 2, "max_length": 128,
                                     "packing": True, "neftune_noise_alpha": 5})
    manifest = run_stage(STAGES["sft"], cfg).to_dict()
    out = tmp_path / "sft" / "hf"
    assert manifest["inputs"][-1]["path"] == str(model_in)
    m = manifest["metrics"]
    assert m["steps"] == 6 and m["last_loss"] < m["first_loss"] - 0.3, m
    curve = json.loads((out / "loss_curve.json").read_text())
    assert len(curve) == 6 and all(c["aux_loss"] > 0 for c in curve)  # the router's load-balancing loss is on
    assert (out / "manifest.json").is_file() and not (tmp_path / "sft" / ".hf.trainer" / "final").exists()
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == "MixtralForCausalLM"
    generation = json.loads((out / "generation_config.json").read_text())  # a reply ends at its turn's end
    end, base_eos = tok.convert_tokens_to_ids(IM_END), AutoTokenizer.from_pretrained(model_in).eos_token_id
    assert generation["eos_token_id"] == [end, base_eos] and base_eos != end
    assert (out / "tokenizer.model").is_file()  # llama.cpp's converter reads SentencePiece from it
    assert tok.eos_token == IM_END and json.loads((out / "config.json").read_text())["eos_token_id"] == end
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    config = json.loads((out / "config.json").read_text())  # transformers 4.x reads theta only at the top level
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == model.config.rope_parameters["rope_theta"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "日本の首都はどこですか？"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


def _assistant_char_spans(text: str) -> list[tuple[int, int]]:
    """Where assistant replies and their end-of-turn token sit in the rendered conversation."""
    spans, head = [], f"{IM_START}assistant\n"
    start = text.find(head)
    while start != -1:
        begin = start + len(head)
        end = text.index(IM_END, begin) + len(IM_END)
        spans.append((begin, end))
        start = text.find(head, end)
    return spans


def test_labels_are_minus_100_exactly_outside_assistant_replies(llama_dir, tmp_path):
    sc = SftConfig(datasets=SFT_DATA, learning_rate=1e-3, max_steps=1, max_length=256)
    cfg = post_config(tmp_path, sft=sc.model_dump(mode="json"))
    tok = hf.load_tokenizer(llama_dir, "sft.tokenizer_dir")
    data = load_mixture(sc.datasets, RowPolicy("sft"), seed=0).dataset
    trainer = make_trainer(sc, hf.load_model(llama_dir, torch.float32, len(tok)), tok, data,
                           hf.trainer_kwargs(cfg, sc, tmp_path / "work", "sft"))
    checked = 0
    for row, example in zip(data, trainer.train_dataset):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == example["input_ids"]
        spans = _assistant_char_spans(text)
        inside = [any(b <= s and e <= end for b, end in spans) for s, e in enc["offset_mapping"]]
        labels = example["labels"]
        assert [lab != -100 for lab in labels] == inside, text
        assert all(lab == i for lab, i in zip(labels, example["input_ids"]) if lab != -100)
        checked += sum(inside)
    assert checked > 100  # assistant tokens were found and kept, not everything masked


def test_a_second_sft_run_keeps_the_first_model_aside(llama_dir, tmp_path):
    copy_model(llama_dir, tmp_path / "export" / "hf")
    section = {"datasets": SFT_DATA, "learning_rate": 1e-3, "max_steps": 1, "global_batch_size": 1,
               "max_length": 64}
    run_stage(STAGES["sft"], post_config(tmp_path, sft=section))
    first = (tmp_path / "sft" / "hf" / "model.safetensors").read_bytes()
    run_stage(STAGES["sft"], post_config(tmp_path, sft={**section, "learning_rate": 5e-3}))
    moved, = (tmp_path / "sft").glob("hf.prev-*")
    assert (moved / "model.safetensors").read_bytes() == first
    assert (tmp_path / "sft" / "hf" / "model.safetensors").read_bytes() != first
