"""The data stage's datatrove blocks: character-shingle MinHash signatures."""

from __future__ import annotations

import numpy as np

from factory.data.blocks import CharacterMinhashSignature
from factory.data.config import DedupConfig
from factory.data.steps import minhash_config

DOC = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
       "ニャーニャー泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。")
OTHER = ("富士山は標高3776メートルで、日本で最も高い山である。夏の登山シーズンには多くの登山者が山頂を目指す。"
         "山頂からの御来光は格別で、毎年多くの人がその景色を見るために夜通し歩く。")


def _signature(step: CharacterMinhashSignature, text: str) -> np.ndarray:
    return np.concatenate(step.get_signature(step.get_shingles(text)))


def test_signature_similarity_tracks_text_overlap_and_ignores_layout(tmp_path):
    step = CharacterMinhashSignature(str(tmp_path), minhash_config(DedupConfig()))
    a, b, c = (_signature(step, t) for t in (DOC, DOC[:-5] + "見たのだ。", OTHER))
    assert (a == b).mean() > 0.8
    assert (a == c).mean() < 0.1
    assert (_signature(step, DOC.replace("。", "。\n  ")) == a).all()
    assert step.get_shingles("").size == 0
