"""Tiny HF folders for post-training tests: our SentencePiece + chat-template tokenizer, Llama and Mixtral."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from factory.config import validate_config

DEMO_DATA = Path("configs/demo-data")
HF_SHAPES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
MOE = dict(num_local_experts=4, num_experts_per_tok=2)


def demo_text() -> list[str]:
    """Every string of the shipped demo data, to train the tokenizer on."""
    out = []
    for path in DEMO_DATA.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            out += _strings(json.loads(line))
    return out


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [s for v in items for s in _strings(v)]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """Our tokenizer recipe (SentencePiece BPE, byte fallback) exported with tokenizer/hf.py's chat template."""
    from tokenizer import hf
    from tokenizer.config import TokenizerConfig
    from tokenizer.train import train

    out = tmp_path_factory.mktemp("tok")
    text = out / "text.txt"
    text.write_text("\n".join(demo_text() * 3) + "\n", encoding="utf-8")
    tc = TokenizerConfig(inputs=[text], model_type="bpe", vocab_size=700, granularity="none",
                         character_coverage=1.0, num_workers=1)
    train(tc, text, out / "tokenizer")
    hf.export(out, tc.tokens)
    return out


def write_model(folder: Path, tokenizer_dir: Path, arch: str, seed: int = 0) -> Path:
    """A random tiny `arch` model with the test tokenizer's files beside it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(seed)
    extra = MOE if arch == "mixtral" else {}
    config = AutoConfig.for_model(arch, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  **HF_SHAPES, **extra)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    shutil.copy2(tokenizer_dir / "tokenizer.model", folder / "tokenizer.model")  # as the export stage writes it
    return folder


@pytest.fixture(scope="session")
def llama_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("llama") / "hf", tokenizer_dir, "llama")


@pytest.fixture(scope="session")
def mixtral_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("mixtral") / "hf", tokenizer_dir, "mixtral")


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def post_config(run_dir: Path, **sections) -> object:
    """A validated CPU fp32 config with the given post-training sections."""
    return validate_config({"run": {"name": "test", "dir": str(run_dir)},
                            "runtime": {"device": "cpu", "precision": "fp32", "seed": 0}, **sections})


SFT_DATA = [{"path": str(DEMO_DATA / "sft.jsonl")}, {"path": str(DEMO_DATA / "sft-sharegpt.jsonl"), "weight": 2}]
DPO_DATA = [{"path": str(DEMO_DATA / "dpo.jsonl")}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


JCQA_ROWS = [{"q_id": i, "question": q, **{f"choice{k}": c for k, c in enumerate(choices)}, "label": label}
             for i, (q, choices, label) in enumerate([
                 ("田んぼが広がる風景を何という？", ["畑", "海", "田園", "地方", "牧場"], 2),
                 ("ふたつをくっつけるのは？", ["接着剤", "船", "炎症", "ドリル", "営業"], 0),
                 ("雨の日に差すものは？", ["靴", "傘", "帽子", "机", "皿"], 1),
                 ("魚が泳ぐ場所は？", ["空", "山", "川", "森", "砂漠"], 2),
                 ("夜空に光るものは？", ["石", "土", "木", "草", "星"], 4)])]
JNLI_ROWS = [{"sentence_pair_id": str(i), "sentence1": s1, "sentence2": s2, "label": label}
             for i, (s1, s2, label) in enumerate([
                 ("キリンが木の間から顔を出しています。", "キリンがいます。", "neutral"),
                 ("男性が自転車に乗っています。", "男性が乗り物に乗っています。", "entailment"),
                 ("犬が芝生の上で寝ています。", "犬が走っています。", "neutral"),
                 ("女性が傘を差しています。", "女性は何も持っていません。", "contradiction")])]
JSTS_ROWS = [{"sentence_pair_id": str(i), "sentence1": f"文{i}です。", "sentence2": f"文{i}でした。", "label": score}
             for i, score in enumerate([1.0, 2.0, 3.0, 4.0])]
JSQUAD = {"data": [{"title": "梅雨", "paragraphs": [{
    "context": "梅雨 [SEP] 梅雨は、北海道と小笠原諸島を除く日本、東アジアの広範囲でみられる雨季の一種である。",
    "qas": [{"id": "q0", "question": "梅雨がないのは北海道とどこか。", "answers": [{"text": "小笠原諸島"}, {"text": "小笠原"}]},
            {"id": "q1", "question": "梅雨とは何季の一種か？", "answers": [{"text": "雨季"}]},
            {"id": "q2", "question": "梅雨はどのあたりで見られるか？", "answers": [{"text": "東アジア"}]}]}]}]}
MT_QUESTIONS = [{"question_id": 1, "category": "writing", "turns": ["旅行の計画を書いてください。", "もっと短くしてください。"]},
                {"question_id": 2, "category": "math", "turns": ["1+1は？", "それを3倍すると？"]}]
MT_REFERENCES = [{"question_id": 2, "model_id": "reference", "choices": [{"index": 0, "turns": ["2です。", "6です。"]}]}]
# Judge prompts in FastChat's layout (name, system_prompt, prompt_template with its fields), worded for the tests.
MT_JUDGE_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "judge", "output_format": "[[rating]]",
     "prompt_template": "single turn\nQ: {question}\nA: {answer}"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "judge", "output_format": "[[rating]]",
     "prompt_template": "single turn with reference\nQ: {question}\nREF: {ref_answer_1}\nA: {answer}"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "judge turn 2", "output_format": "[[rating]]",
     "prompt_template": "multi turn\nQ1: {question_1}\nA1: {answer_1}\nQ2: {question_2}\nA2: {answer_2}"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "judge turn 2",
     "output_format": "[[rating]]", "prompt_template": "multi turn with reference\nQ1: {question_1}\n"
     "REF1: {ref_answer_1}\nQ2: {question_2}\nREF2: {ref_answer_2}\nA1: {answer_1}\nA2: {answer_2}"},
]


@pytest.fixture
def eval_data(tmp_path) -> Path:
    """An eval data folder in the fetched folder's layout, with a handful of rows per task (written here)."""
    root = tmp_path / "eval-data"
    write_jsonl(root / "jglue" / "jcommonsenseqa-valid-v1.3.json", JCQA_ROWS)
    write_jsonl(root / "jglue" / "jnli-valid-v1.3.json", JNLI_ROWS)
    write_jsonl(root / "jglue" / "jsts-valid-v1.3.json", JSTS_ROWS)
    (root / "jglue" / "jsquad-valid-v1.3.json").write_text(json.dumps(JSQUAD, ensure_ascii=False), encoding="utf-8")
    write_jsonl(root / "japanese_mt_bench" / "question.jsonl", MT_QUESTIONS)
    write_jsonl(root / "japanese_mt_bench" / "reference_answer_gpt-4.jsonl", MT_REFERENCES)
    write_jsonl(root / "japanese_mt_bench" / "judge_prompts.jsonl", MT_JUDGE_PROMPTS)
    return root


class ScriptedJudge:
    """A judge backend: rates first turns 8 and second turns 4, and counts its calls."""

    def __init__(self):
        self.calls = 0

    def complete(self, messages, max_tokens, temperature, seed):
        from factory.endpoints.server import Completion

        self.calls += 1
        rating = 4 if messages[0]["content"] == "judge turn 2" else 8
        return Completion(f"Fine. Rating: [[{rating}]]", 10, 5, "stop")


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
