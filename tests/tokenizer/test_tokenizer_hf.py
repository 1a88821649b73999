"""Hugging Face export: offline AutoTokenizer load, ids equal SentencePiece's, exact round-trip, chat template."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from tests.tokenizer.conftest import TRICKY, fixture_lines
from tokenizer.hf import HF_FILES


def _load(out):
    return (spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")),
            AutoTokenizer.from_pretrained(out, local_files_only=True))


def test_bpe_hf_ids_equal_sentencepiece_ids(trained):
    out, report = trained(model_type="bpe")
    sp, tok = _load(out)
    for text in TRICKY + fixture_lines():
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), text
    assert report["heldout"]["hf_sp_id_mismatches"] == 0


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_tricky_text_round_trips_exactly(trained, model_type):
    out, report = trained(model_type=model_type)
    sp, tok = _load(out)
    for text in TRICKY:
        assert sp.decode(sp.encode(text)) == text
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert report["heldout"]["round_trip_failures"] == 0
    assert report["heldout"]["hf_round_trip_failures"] == 0


def test_nfkc_folds_width_forms_so_round_trip_fails_and_is_counted(trained):
    out, report = trained(normalization="nfkc")
    sp, tok = _load(out)
    assert sp.decode(sp.encode("ＡＢＣ１２３ｶﾀｶﾅ")) == "ABC123カタカナ"
    assert tok.encode("ＡＢＣ１２３ｶﾀｶﾅ", add_special_tokens=False) == sp.encode("ＡＢＣ１２３ｶﾀｶﾅ")
    assert report["tokenizer"]["normalization"] == "nfkc"
    identity, _ = _load(trained()[0])
    assert identity.decode(identity.encode("ＡＢＣ１２３ｶﾀｶﾅ")) == "ＡＢＣ１２３ｶﾀｶﾅ"


def test_special_tokens_are_single_ids_and_only_chat_tokens_are_skipped(trained):
    out, _ = trained()
    sp, tok = _load(out)
    for token in ["<|im_start|>", "<|im_end|>", "<EOD>", "\n", "<s>", "</s>", "<pad>"]:
        assert tok.encode(token, add_special_tokens=False) == [sp.piece_to_id(token)]
    # EOS is the document separator pretraining put after each document (<EOD>, 4), not </s> (2)
    assert [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id] == [1, 4, 3, 0]
    ids = tok.encode("<|im_start|>user\n質問<|im_end|><EOD>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "user\n質問"


def test_chat_template_renders_turns_and_marks_the_assistant_reply(trained):
    out, _ = trained()
    _, tok = _load(out)
    messages = [{"role": "user", "content": "日本の首都は？"}, {"role": "assistant", "content": "東京です。"}]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\n日本の首都は？<|im_end|>\n<|im_start|>assistant\n東京です。<|im_end|>\n")
    assert tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_end|>\n<|im_start|>assistant\n")
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    reply = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(reply) == "東京です。<|im_end|>"


def test_hf_files_name_the_backend_tokens_and_template(trained, monkeypatch):
    out, _ = trained()
    assert all((out / name).is_file() for name in HF_FILES)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # known to transformers 4.x; 5.x maps it
    assert "<|im_start|>" in config["chat_template"]
    assert json.loads((out / "special_tokens_map.json").read_text(encoding="utf-8")) == {
        "bos_token": "<s>", "eos_token": "<EOD>", "unk_token": "<unk>", "pad_token": "<pad>",
        "additional_special_tokens": ["<EOD>", "<|im_start|>", "<|im_end|>"]}
    assert config["eos_token"] == "<EOD>"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert type(AutoTokenizer.from_pretrained(str(out))).__name__ == "TokenizersBackend"  # the same backend in 5.x
