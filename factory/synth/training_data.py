"""Synthetic records as training data, every row carrying its provenance (record id, persona, seed document,
template, teacher model):

- pretraining text: completions of `pretraining_tasks`, screened by the data stage's filters (length,
  Japanese share, repetition, language mixing); kept and rejected rows (with the reason) are written, and
  the kept text is packed with the project tokenizer as the dataset `synthetic` (phase `synthetic` of the
  stage's blend.json), so a training phase can name it;
- SFT conversations: (prompt, completion) of `sft_tasks`, a qa completion split into question and answer
  and a dialogue into turns when their format allows; the assistant turns pass the code-switch detector;
- DPO pairs: the judged preference pairs whose answers differ and whose chosen answer passes the detector.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from factory.data.encode import eod_id
from factory.data.filters import LanguageMix, build_filters, first_rejection
from factory.data.langmix import LangMixDetector
from factory.data.pack import pack_records
from factory.io import atomic_write_json, atomic_write_text
from factory.posttrain.data import degenerate as degenerate_pair
from factory.synth.config import SynthTraining

PROVENANCE = ("id", "task", "persona", "seed_id", "template", "model")
PRETRAINING, PRETRAINING_REJECTED, SFT, DPO = "pretraining.jsonl", "pretraining_rejected.jsonl", "sft.jsonl", "dpo.jsonl"
PACKED = "synthetic"
_QA = re.compile(r"質問[:：]\s*(?P<q>.+?)\s*回答[:：]\s*(?P<a>.+)", re.S)
_TURN = re.compile(r"^(ユーザー|アシスタント)[:：]\s*", re.M)


def _provenance(record: dict[str, Any]) -> dict[str, Any]:
    return {"synth": {k: record.get(k) for k in PROVENANCE}}


def _write(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    rows = list(rows)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def pretraining_text(training: SynthTraining, samples: list[dict[str, Any]], out: Path) -> dict[str, int]:
    """Filtered pretraining rows of the samples; returns the funnel's counts."""
    chain = build_filters(training, japanese=True)
    kept, rejected = [], []
    for rec in samples:
        if rec["task"] not in training.pretraining_tasks:
            continue
        verdict = first_rejection(chain, rec["text"])
        if verdict is None:
            kept.append({"id": rec["id"], "text": rec["text"], **_provenance(rec)})
        else:
            rejected.append({"id": rec["id"], "reason": verdict[0], "detail": verdict[1], "text": rec["text"],
                             **_provenance(rec)})
    _write(out / PRETRAINING, kept)
    _write(out / PRETRAINING_REJECTED, rejected)
    return {"pretraining_candidates": len(kept) + len(rejected), "pretraining_kept": len(kept),
            "pretraining_rejected": len(rejected)}


def conversation(rec: dict[str, Any]) -> list[dict[str, str]]:
    """The SFT turns of one record: a parsed qa or dialogue, else the prompt and the completion."""
    text = rec["text"].strip()
    if rec["task"] == "qa" and (m := _QA.search(text)):
        return [{"role": "user", "content": m["q"].strip()}, {"role": "assistant", "content": m["a"].strip()}]
    if rec["task"] == "dialogue":
        parts = _TURN.split(text)[1:]
        turns = [{"role": "user" if who == "ユーザー" else "assistant", "content": said.strip()}
                 for who, said in zip(parts[::2], parts[1::2]) if said.strip()]
        if turns and turns[0]["role"] == "user" and any(t["role"] == "assistant" for t in turns):
            return turns
    return [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": text}]


def sft_rows(training: SynthTraining, samples: list[dict[str, Any]], out: Path) -> dict[str, int]:
    detector = LanguageMix(LangMixDetector.from_config(training.langmix))
    rows, mixed, empty = [], 0, 0
    for rec in samples:
        if rec["task"] not in training.sft_tasks:
            continue
        messages = conversation(rec)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        if not all(answers):
            empty += 1
        elif any(detector(a) for a in answers):
            mixed += 1
        else:
            rows.append({"messages": messages, **_provenance(rec)})
    _write(out / SFT, rows)
    return {"sft_rows": len(rows), "sft_rejected_code_switch": mixed, "sft_rejected_empty": empty}


def dpo_rows(training: SynthTraining, pairs: list[dict[str, Any]], out: Path) -> dict[str, int]:
    detector = LanguageMix(LangMixDetector.from_config(training.langmix))
    rows, degenerate, mixed = [], 0, 0
    for pair in pairs:
        chosen, rejected = pair["chosen"].strip(), pair["rejected"].strip()
        if degenerate_pair({"chosen": chosen, "rejected": rejected}):
            degenerate += 1
        elif detector(chosen):
            mixed += 1
        else:
            rows.append({"prompt": pair["prompt"], "chosen": chosen, "rejected": rejected,
                         "synth": {**{k: pair.get(k) for k in PROVENANCE}, "judge_model": pair.get("judge_model"),
                                   "chosen_id": pair.get("chosen_id"), "rejected_id": pair.get("rejected_id")}})
    _write(out / DPO, rows)
    return {"dpo_rows": len(rows), "dpo_rejected_degenerate": degenerate, "dpo_rejected_code_switch": mixed}


def pack_pretraining(out: Path, tokenizer_model: Path) -> dict[str, int]:
    """The kept pretraining text as the indexed dataset `synthetic` and blend.json phase `synthetic`."""
    import sentencepiece as spm


    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    (out / "pack").mkdir(exist_ok=True)
    prefix = out / "pack" / f"{PACKED}_text_document"
    counts = pack_records(out / PRETRAINING, "text", prefix, tokenizer_model, sp.vocab_size(), eod_id(sp), 1, 16 << 20)
    atomic_write_json(out / "blend.json", {"phases": [{"name": PACKED, "prefixes": [str(prefix)], "weights": [1.0]}]})
    return {"pretraining_tokens": counts["tokens"], "pretraining_documents": counts["documents"]}
