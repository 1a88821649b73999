"""Vocabulary extension (the Swallow route): an imported Llama-style folder gets Japanese pieces, unchanged
logits on old ids and unchanged ids on text without new pieces, continues training, exports, and loads in
stock transformers with the new tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from factory.config import validate_config
from factory.convert.vocab import decompositions, extended_model, resized, _proto
from factory.errors import ConfigError
from factory.runner import run_stage
from factory.registry import STAGES
from tests.convert.conftest import HF_COMMON
from tests.tokenizer.conftest import fixture_lines
from tests.train.conftest import TRAIN

JAPANESE = [line for line in fixture_lines() if any("\u3041" <= c <= "\u9fff" for c in line)]
ENGLISH = [line for line in fixture_lines() if line.isascii()]


def _train(folder: Path, lines: list[str], **options) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(lines * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(folder / "train.txt"), model_prefix=str(folder / "tokenizer"),
                                   model_type="bpe", byte_fallback=True, minloglevel=2, hard_vocab_limit=False,
                                   **options)
    (folder / "train.txt").unlink()
    return folder / "tokenizer.model"


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    """A tiny Llama with a Llama-2-style tokenizer (SentencePiece BPE, dummy prefix, whitespace kept, byte
    fallback, split digits) trained on English only, converted to tokenizer.json by transformers."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("llama")
    model_file = _train(folder, ENGLISH, vocab_size=400, split_digits=True, normalization_rule_name="identity",
                        remove_extra_whitespaces=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": False}))
    AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = None  # Llama-2's own tokenizer.json: always prepend "▁", as SentencePiece does
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "TokenizersBackend"  # load tokenizer.json as written
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    assert all(tok(t, add_special_tokens=False)["input_ids"] == sp.encode(t) for t in fixture_lines())
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **{**HF_COMMON, "vocab_size": len(tok), "max_position_embeddings": 128})
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def japanese_tokenizer(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ja"), JAPANESE, vocab_size=1500, character_coverage=0.9995).parent


def test_new_pieces_come_after_their_characters_and_old_text_keeps_its_ids(llama_folder, japanese_tokenizer):
    base = _proto((llama_folder / "tokenizer.model").read_bytes())
    extended, added = extended_model(base, _proto((japanese_tokenizer / "tokenizer.model").read_bytes()), 300)
    assert 0 < len(added) <= 300 and len(extended.pieces) == len(base.pieces) + len(added)
    known = {p.piece for p in base.pieces}
    for piece in added:  # every new piece is a single character or a merge of two known symbols
        assert len(piece) == 1 or any(piece[:i] in known and piece[i:] in known for i in range(1, len(piece)))
        known.add(piece)
    assert [p.score for p in extended.pieces][len(base.pieces):] == sorted(
        [p.score for p in extended.pieces][len(base.pieces):], reverse=True)
    old = spm.SentencePieceProcessor(model_proto=base.SerializeToString())
    new = spm.SentencePieceProcessor(model_proto=extended.SerializeToString())
    for line in ENGLISH:
        assert new.encode(line) == old.encode(line)
    assert sum(map(len, new.encode(JAPANESE))) < 0.7 * sum(map(len, old.encode(JAPANESE)))


def test_new_rows_are_the_mean_of_their_decomposition(llama_folder, japanese_tokenizer):
    base = _proto((llama_folder / "tokenizer.model").read_bytes())
    _, added = extended_model(base, _proto((japanese_tokenizer / "tokenizer.model").read_bytes()), 50)
    parts = decompositions(base, added)
    old = spm.SentencePieceProcessor(model_proto=base.SerializeToString())
    first = len(base.pieces)
    assert old.decode(parts[first]) == added[0] and all(parts.values())
    matrix = torch.randn(512, 8)
    out = resized(matrix, 640, 400, parts)
    assert out.shape == (640, 8) and torch.equal(out[:400], matrix[:400])
    assert torch.allclose(out[first + 3], matrix[parts[first + 3]].mean(0))
    assert not out[first + len(added):].any()  # padding rows stay zero


def _config(tmp_path, **sections):
    return validate_config({"run": {"name": "swallow", "dir": str(tmp_path / "run")},
                            "runtime": {"device": "cpu", "precision": "fp32"}, **sections})


def test_refuses_a_tokenizer_that_is_not_sentencepiece_bpe(tmp_path, japanese_tokenizer):
    from tests.convert.conftest import write_hf_model

    src = write_hf_model(tmp_path / "src", "llama")  # word-level tokenizer.json, no tokenizer.model
    text = tmp_path / "ja.txt"
    text.write_text("\n".join(JAPANESE), encoding="utf-8")
    cfg = _config(tmp_path, hf_import={"hf_dir": str(src), "extend_vocab": {
        "tokenizer_dir": str(japanese_tokenizer), "text": [str(text)]}})
    with pytest.raises(ConfigError, match="has no tokenizer.model; only SentencePiece BPE"):
        run_stage(STAGES["import"], cfg)
    assert not (tmp_path / "run" / "import" / "checkpoints").exists()


def test_extended_import_continues_exports_and_loads_in_transformers(tmp_path, llama_folder, japanese_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = tmp_path / "ja.txt"
    text.write_text("\n".join(JAPANESE + ENGLISH), encoding="utf-8")
    run = tmp_path / "run"
    manifest = run_stage(STAGES["import"], _config(tmp_path, hf_import={
        "hf_dir": str(llama_folder), "extend_vocab": {"tokenizer_dir": str(japanese_tokenizer),
                                                      "max_new_pieces": 300, "text": [str(text)]}}))
    metrics = manifest.metrics
    assert metrics["vocab_extended"] == metrics["vocab_base"] + metrics["vocab_added"] > metrics["vocab_base"]
    assert metrics["max_abs_logit_diff_old_ids"] <= 1e-5
    assert metrics["ja_chars_per_token_after"] > 1.4 * metrics["ja_chars_per_token_before"]
    tokenizer_dir = run / "import" / "tokenizer"
    assert not list((run / "import").glob(".*unextended"))

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in JAPANESE * 8), encoding="utf-8")
    run_stage(STAGES["pack"], _config(tmp_path, pack={
        "datasets": [{"name": "ja", "path": str(docs)}], "tokenizer_dir": str(tokenizer_dir), "num_workers": 1},
        blend={"phases": [{"name": "main", "datasets": [{"dataset": "ja", "weight": 1}]}]}))
    cpt = {**TRAIN, "train_iters": 3, "init_from": str(run / "import" / "checkpoints"),
           "tokenizer_dir": str(tokenizer_dir), "blend_file": str(run / "pack" / "blend.json"),
           "checkpoint": {"save_interval": 3}}
    cpt_cfg = _config(tmp_path, cpt=cpt)
    cpt_cfg.model = None
    run_stage(STAGES["cpt"], cpt_cfg)
    run_stage(STAGES["export"], _config(tmp_path, export={
        "checkpoint": str(run / "cpt" / "checkpoints"), "tokenizer_dir": str(tokenizer_dir)}))

    hf = run / "export" / "hf"
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True)
    assert len(tok) == metrics["vocab_extended"] == model.config.vocab_size
    ids = tok(JAPANESE[0], return_tensors="pt")["input_ids"]
    assert ids.max().item() >= metrics["vocab_base"]  # the new pieces are used
    assert tok.decode(ids[0], skip_special_tokens=True) == JAPANESE[0]
    assert torch.isfinite(model(ids).logits).all()
