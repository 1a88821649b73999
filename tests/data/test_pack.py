"""The pack stage: JSONL -> Megatron indexed datasets that GPTDataset reads; blends; bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from factory.config import validate_config
from factory.errors import ConfigError, DataError
from factory.runner import run_stage
from factory.registry import STAGES
from tests.conftest import TINY_DENSE

JA = ["吾輩は猫である。名前はまだ無い。", "東京都は日本の首都です。", "機械学習のモデルを訓練する。",
      "今日は良い天気ですね。散歩に行きましょう。", "データの品質が最も重要な要素だった。"]
EN = ["The quick brown fox jumps over the lazy dog.", "Megatron-Core trains large language models.",
      "Sparse upcycling turns a dense model into a mixture of experts."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    (d / "train.txt").write_text("\n".join((JA + EN) * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(d / "train.txt"), model_prefix=str(d / "tokenizer"), vocab_size=400, model_type="bpe", hard_vocab_limit=False,
        user_defined_symbols=["<EOD>"], byte_fallback=True, minloglevel=2)
    return d


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def _config(tmp_path, tokenizer_dir, datasets, blend=None):
    raw = {**TINY_DENSE, "run": {"name": "t", "dir": str(tmp_path / "run")},
           "pack": {"datasets": datasets, "tokenizer_dir": str(tokenizer_dir), "num_workers": 2,
                    "task_bytes": 64}}
    if blend:
        raw["blend"] = blend
    return validate_config(raw)


def test_pack_writes_indexed_datasets_gptdataset_reads(tmp_path, tokenizer_dir):
    ja = _jsonl(tmp_path / "ja.jsonl", JA + [""])
    en = _jsonl(tmp_path / "en.jsonl", EN)
    cfg = _config(tmp_path, tokenizer_dir,
                  [{"name": "ja", "path": str(ja)}, {"name": "en", "path": str(en)}],
                  blend={"phases": [{"name": "main", "datasets": [{"dataset": "ja", "repeat": 2},
                                                                   {"dataset": "en", "repeat": 1}]}]})
    manifest = run_stage(STAGES["pack"], cfg)
    out = tmp_path / "run" / "pack"

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    eod = sp.piece_to_id("<EOD>")
    ds = IndexedDataset(str(out / "ja_text_document"))
    assert len(ds) == len(JA)  # the empty record is skipped
    for i, text in enumerate(JA):
        assert ds[i].tolist() == sp.encode(text) + [eod]
    assert ds[0].dtype == np.uint16  # vocab < 65,500
    ja_tokens = sum(len(sp.encode(t)) + 1 for t in JA)
    en_tokens = sum(len(sp.encode(t)) + 1 for t in EN)
    assert manifest.metrics["ja.tokens"] == ja_tokens and manifest.metrics["en.tokens"] == en_tokens
    assert manifest.metrics["tokens"] == ja_tokens + en_tokens and manifest.metrics["documents"] == 8
    assert json.loads((out / "manifest.json").read_text())["metrics"]["tokens"] == ja_tokens + en_tokens

    blend = json.loads((out / "blend.json").read_text())["phases"][0]
    assert blend["weights"] == pytest.approx([2 * ja_tokens / (2 * ja_tokens + en_tokens),
                                              en_tokens / (2 * ja_tokens + en_tokens)])
    _read_with_gptdataset(blend, seq=8, model_file=tokenizer_dir / "tokenizer.model")


def _read_with_gptdataset(blend, seq, model_file):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer

    config = GPTDatasetConfig(random_seed=1, sequence_length=seq, blend=(blend["prefixes"], blend["weights"]),
                              split="100,0,0", reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False, mmap_bin_files=False,
                              tokenizer=SentencePieceMegatronTokenizer(model_file))
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [16, 0, 0], lambda: True, config).build()
    sample = train[0]
    assert sample["tokens"].shape[0] == seq and len(train) >= 16
    assert sample["tokens"].tolist()[1:] == sample["labels"].tolist()[:-1]


def test_malformed_jsonl_names_file_and_line_and_writes_nothing(tmp_path, tokenizer_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    cfg = _config(tmp_path, tokenizer_dir, [{"name": "bad", "path": str(bad)}])
    with pytest.raises(DataError, match=rf"^{bad}:2: invalid JSON"):
        run_stage(STAGES["pack"], cfg)
    assert not (tmp_path / "run" / "pack").exists()


def test_missing_inputs_and_bad_blend_are_config_errors(tmp_path, tokenizer_dir):
    cfg = _config(tmp_path, tokenizer_dir, [{"name": "x", "path": str(tmp_path / "nope.jsonl")}])
    with pytest.raises(ConfigError, match="pack: input not found: .*nope.jsonl"):
        run_stage(STAGES["pack"], cfg)
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, tokenizer_dir, [{"name": "x", "path": "a.jsonl"}, {"name": "x", "path": "b.jsonl"}],
                blend={"phases": [{"name": "p", "datasets": [{"dataset": "y", "weight": 1, "repeat": 2}]}]})
    text = "\n".join(err.value.problems)
    assert "pack.datasets=['x']: dataset names must be unique" in text
    assert "blend.phases[0].datasets[0]=y: set exactly one of weight or repeat" in text
    assert "blend.phases[0].datasets=y: not a pack dataset (known: x)" in text


def test_llm_jp_3_mix_preset_gives_its_proportions(tmp_path):
    from factory.config import load_config
    from factory.data.pack_stage import resolve_blend

    cfg = load_config("configs/llm-jp-3-mix.yaml")
    tokens = {"ja_hq": 200e9, "ja_web": 192e9, "en": 950e9, "code": 114e9, "zh": 0.5e9, "ko": 0.5e9}
    blend = resolve_blend(cfg, tmp_path, {k: {"tokens": v} for k, v in tokens.items()})["phases"][0]
    share = dict(zip([Path(p).name.removesuffix("_text_document") for p in blend["prefixes"]], blend["weights"]))
    total = 592e9 + 950e9 + 114e9 + 1e9
    assert share["ja_hq"] + share["ja_web"] == pytest.approx(592e9 / total)
    assert share["ja_hq"] == pytest.approx(2 * share["ja_web"] * 200 / 192)
    assert share["en"] == pytest.approx(950e9 / total) and sum(share.values()) == pytest.approx(1.0)


def test_pack_reads_every_format_the_data_stage_reads(tmp_path, tokenizer_dir):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    sources = {"jsonl": _jsonl(tmp_path / "a.jsonl", JA), "text": tmp_path / "a.txt",
               "parquet": tmp_path / "a.parquet", "hf": tmp_path / "a_ds"}
    sources["text"].write_text("\n\n".join(JA) + "\n", encoding="utf-8")  # one paragraph per document
    pq.write_table(pa.table({"text": JA}), sources["parquet"])
    datasets.Dataset.from_dict({"text": JA}).save_to_disk(str(sources["hf"]))
    cfg = _config(tmp_path, tokenizer_dir, [{"name": n, "path": str(p)} for n, p in sources.items()])
    run_stage(STAGES["pack"], cfg)
    out = tmp_path / "run" / "pack"
    readers = {n: IndexedDataset(str(out / f"{n}_text_document")) for n in sources}  # held: views map the files
    docs = {n: [reader[i].tolist() for i in range(len(reader))] for n, reader in readers.items()}
    assert docs["text"] == docs["parquet"] == docs["hf"] == docs["jsonl"]
