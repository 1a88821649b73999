"""README.md model card: architecture, lineage from the run's manifests and the checkpoint, verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factory.manifest import manifests_under

_METRIC_KEYS = ("tokens", "documents", "iteration", "consumed_samples", "train_tokens", "final_loss",
                "max_abs_logit_diff", "mode", "upcycling_mode", "granularity")


def manifests(run_dir: Path) -> list[dict[str, Any]]:
    """The run's stage manifests (factory/manifest.py `manifests_under`), oldest first."""
    return sorted((m for _, m in manifests_under(Path(run_dir))), key=lambda m: m.get("started_at", ""))


def _stage_line(m: dict[str, Any]) -> str:
    metrics = m.get("metrics", {})
    picked = {k: v for k, v in metrics.items() if k in _METRIC_KEYS or k.endswith("tokens")}
    shown = ", ".join(f"{k}={v}" for k, v in picked.items()) or "-"
    return f"| {m.get('stage', '?')} | {m.get('started_at', '?')} | {shown} |"


def render(name: str, arch_class: str, model: dict[str, Any], lineage: dict[str, Any],
           stage_manifests: list[dict[str, Any]], verification: dict[str, Any],
           tokenizer_type: str | None = None) -> str:
    """The model card text."""
    moe = model.get("moe")
    shape = (f"{model['num_layers']} layers, hidden {model['hidden_size']}, "
             f"{model['num_attention_heads']} heads / {model.get('num_query_groups') or model['num_attention_heads']} "
             f"KV groups, vocab {model['vocab_size']}")
    if moe:
        shape += f", {moe['num_experts']} experts (top-{moe['router_topk']})"
    lines = [
        "---", "library_name: transformers", "language: [ja, en]", "---", "",
        f"# {name}", "",
        f"`{arch_class}` exported by jp-model-factory; loads with stock transformers "
        "(`AutoModelForCausalLM.from_pretrained`, no remote code).", "",
        f"Shape: {shape}.", "", "## Lineage", "",
        "| stage | started | figures |", "|---|---|---|",
        *[_stage_line(m) for m in stage_manifests],
        "", "Checkpoint metadata:", "", "```json",
        json.dumps({k: v for k, v in lineage.items() if k != "model"}, indent=2, ensure_ascii=False, default=str),
        "```", "", "## Verification", "",
        *[f"- {k}: {v}" for k, v in verification.items()], "",
        "## Consumers", "",
        "- transformers 5.x: the logits above. transformers 4.x: `tokenizer_config.json` (class "
        "`PreTrainedTokenizerFast`, special tokens flagged, no BOS or leading space added) and `config.json` "
        "(top-level `rope_theta`) are written for it; the project's tests load exports with 4.57.1 and 5.x and "
        "get the same ids and logits within 1e-5 (tests/convert/test_consumers.py).",
        "- Generation ends at the document separator `<EOD>` that pretraining put after each document: it is the "
        "EOS of `tokenizer_config.json`, `config.json` and `generation_config.json`. SFT/DPO outputs end at the "
        "chat turn's end marker `<|im_end|>` instead.",
        f"- llama.cpp/GGUF: {_llama_cpp_line(tokenizer_type)}", "",
    ]
    return "\n".join(lines)


def _llama_cpp_line(tokenizer_type: str | None) -> str:
    """What llama.cpp's converter makes of this export's tokenizer type (docs/stages/convert.md has the figures)."""
    checked = ("`convert_hf_to_gguf.py` (llama.cpp of llama-cpp-python 0.3.36, f32) keeps the chat markers as "
               "single control tokens, `<EOD>` as an end-of-generation token and the logits within 1e-5 of "
               "transformers on the same ids (tests/convert/test_llama_cpp.py)")
    if tokenizer_type == "BPE":
        return (f"{checked}; this SentencePiece BPE tokenizer also gets transformers' ids on held-out text, so a "
                "GGUF of this folder tokenizes as training did.")
    if tokenizer_type == "Unigram":
        return (f"{checked}, but llama.cpp's SentencePiece path merges BPE-style and does not reproduce this "
                "Unigram tokenizer's ids: on held-out text most lines get other, longer id sequences. "
                "Exact in transformers and vLLM; for GGUF users train the tokenizer with `tokenizer.model_type=bpe`.")
    return "not checked for this tokenizer type."
