"""Synthetic records as training data: filters with reasons, SFT turns, DPO screening, provenance, the packed
dataset and its blend phase as the training engine reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.synth import training_data as td
from factory.synth.config import SynthTraining
from factory.train.blend import read_blend

GOOD = "日本の鉄道は時間に正確なことで知られている。毎朝多くの人が電車で通勤している。"


def sample(i: int, task: str, text: str, prompt: str = "質問を作ってください。") -> dict:
    return {"id": f"s{i}", "task": task, "persona": "教師", "seed_id": f"doc{i}", "template": f"{task}-v1",
            "model": "teacher-x", "prompt": prompt, "text": text}


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_pretraining_text_keeps_what_passes_the_filters_and_records_why_the_rest_failed(tmp_path):
    training = SynthTraining(pretraining_tasks=["summary"], filters={"min_chars": 20})
    samples = [sample(0, "summary", GOOD), sample(1, "summary", "短い"), sample(2, "qa", GOOD)]
    counts = td.pretraining_text(training, samples, tmp_path)
    assert counts == {"pretraining_candidates": 2, "pretraining_kept": 1, "pretraining_rejected": 1}
    kept, = rows(tmp_path / td.PRETRAINING)
    assert kept["id"] == "s0" and kept["text"] == GOOD
    assert kept["synth"] == {"id": "s0", "task": "summary", "persona": "教師", "seed_id": "doc0",
                             "template": "summary-v1", "model": "teacher-x"}
    rejected, = rows(tmp_path / td.PRETRAINING_REJECTED)
    assert rejected["id"] == "s1" and rejected["reason"] and rejected["synth"]["seed_id"] == "doc1"


def test_sft_rows_parse_qa_and_dialogue_and_drop_code_switched_answers(tmp_path):
    training = SynthTraining(sft_tasks=["qa", "dialogue"])
    samples = [sample(0, "qa", "質問: 鉄道はなぜ正確ですか？\n回答: 運行管理が細かいからです。"),
               sample(1, "dialogue", "ユーザー: こんにちは。\nアシスタント: こんにちは、ご用件は何ですか。"),
               sample(2, "qa", "回答なしの文章です。"),
               sample(3, "qa", "質問: 天気は？\n回答: 今日は맑은 날씨입니다晴れです。"),
               sample(4, "summary", GOOD)]
    counts = td.sft_rows(training, samples, tmp_path)
    assert counts == {"sft_rows": 3, "sft_rejected_code_switch": 1, "sft_rejected_empty": 0}
    qa, dialogue, plain = rows(tmp_path / td.SFT)
    assert qa["messages"] == [{"role": "user", "content": "鉄道はなぜ正確ですか？"},
                              {"role": "assistant", "content": "運行管理が細かいからです。"}]
    assert [m["role"] for m in dialogue["messages"]] == ["user", "assistant"]
    assert plain["messages"][0]["content"] == "質問を作ってください。" and plain["synth"]["id"] == "s2"


def test_dpo_rows_reject_degenerate_and_code_switched_pairs_and_keep_both_sample_ids(tmp_path):
    base = {"prompt": "p", "task": "qa", "persona": "教師", "seed_id": "doc0", "template": "qa-v1",
            "model": "teacher-x", "judge_model": "judge-y"}
    pairs = [{**base, "id": "p0", "chosen": GOOD, "rejected": "違う答え。", "chosen_id": "a", "rejected_id": "b"},
             {**base, "id": "p1", "chosen": GOOD, "rejected": GOOD},
             {**base, "id": "p2", "chosen": " ", "rejected": GOOD},
             {**base, "id": "p3", "chosen": "今日は맑은 날씨입니다晴れです。", "rejected": GOOD}]
    counts = td.dpo_rows(SynthTraining(), pairs, tmp_path)
    assert counts == {"dpo_rows": 1, "dpo_rejected_degenerate": 2, "dpo_rejected_code_switch": 1}
    row, = rows(tmp_path / td.DPO)
    assert (row["chosen"], row["rejected"]) == (GOOD, "違う答え。")
    assert row["synth"]["judge_model"] == "judge-y" and (row["synth"]["chosen_id"], row["synth"]["rejected_id"]) == ("a", "b")


def test_the_packed_text_is_a_blend_phase_the_engine_reads_with_one_eod_per_document(tmp_path, tokenizer_root):
    import sentencepiece as spm

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    training = SynthTraining(pretraining_tasks=["summary"])
    texts = [GOOD, "東京都は日本の首都です。人口は約千四百万人です。"]
    td.pretraining_text(training, [sample(i, "summary", t) for i, t in enumerate(texts)], tmp_path)
    model = tokenizer_root / "tokenizer" / "tokenizer.model"
    counts = td.pack_pretraining(tmp_path, model)
    blend = read_blend(tmp_path / "blend.json", td.PACKED)
    assert blend.name == td.PACKED and blend.weights == [1.0]
    dataset = IndexedDataset(blend.prefixes[0])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    eod = sp.piece_to_id("<EOD>")
    assert counts == {"pretraining_documents": 2, "pretraining_tokens": sum(len(dataset[i]) for i in range(2))}
    for i, text in enumerate(texts):
        ids = np.asarray(dataset[i]).tolist()
        assert ids[-1] == eod and sp.decode(ids[:-1]) == text


@pytest.fixture
def tokenizer_root(tmp_path_factory):
    """A BPE tokenizer with `<EOD>`, trained on the texts the test packs."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("tok")
    (root / "tokenizer").mkdir()
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join([GOOD, "東京都は日本の首都です。人口は約千四百万人です。"] * 50), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "tokenizer" / "tokenizer"),
                                   vocab_size=400, model_type="bpe", hard_vocab_limit=False,
                                   user_defined_symbols=["<EOD>"], byte_fallback=True, minloglevel=2)
    return root
