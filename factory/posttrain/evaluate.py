"""Measurements of the eval stage: perplexity, greedy answers, code-switch rate, and the GPU hand-off commands."""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from factory.config_base import CoreConfig
from factory.data.langmix import LangMixDetector
from factory.errors import DataError
from factory.posttrain.benchmark_report import markdown_lines
from factory.records import read_records
from tokenizer.config import SpecialTokens

if TYPE_CHECKING:  # for annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def read_texts(path: Path, text_field: str, limit: int | None = None) -> list[str]:
    """The `text_field` strings of the first `limit` records of a file (any format of factory.records); a
    one-line DataError naming file:line for a malformed record or one whose field is missing or not a string."""
    texts = [r.text for r in islice(read_records(path, text_field=text_field, text_unit="line"), limit)]
    if not texts:
        raise DataError(f"{path}: empty (no records)")
    return texts


@torch.no_grad()
def perplexity(model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: list[str],
               max_length: int) -> dict[str, float]:
    """Token-weighted perplexity over `texts` (each cut to `max_length` tokens): the exponent of the mean
    cross-entropy of each next token, computed from the logits. A model's own `loss` is not used: an MoE's adds
    its load-balancing term (router_aux_loss_coef x the auxiliary loss)."""
    nll, count = 0.0, 0
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"][:, :max_length].to(model.device)
        if ids.shape[1] < 2:
            continue
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    if count == 0:
        raise DataError("perplexity: no document has two or more tokens")
    return {"perplexity": math.exp(nll / count), "nll": nll / count, "tokens": count, "documents": len(texts)}


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """The prompts file as `{"language", "messages"}` rows; a one-line DataError naming `file:line` for a row
    without a string `prompt` or a list of `messages` with a role and a string content each."""
    out = []
    for record in read_records(path, text_field=None):
        row = record.data
        if isinstance(row.get("prompt"), str) and "messages" not in row:
            messages = [{"role": "user", "content": row["prompt"]}]
        elif "messages" in row:
            messages = row["messages"]
            if not (isinstance(messages, list) and messages and all(
                    isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in messages)):
                raise DataError(f"{record.source}: 'messages' must be a list of {{role, content}} with string content")
        elif "prompt" in row:
            raise DataError(f"{record.source}: 'prompt' must be a string, got {type(row['prompt']).__name__}")
        else:
            raise DataError(f"{record.source}: needs 'prompt' or 'messages'; keys found: {', '.join(row) or 'none'}")
        out.append({"language": str(row.get("language", "ja")), "messages": messages})
    if not out:
        raise DataError(f"{path}: empty (no records)")
    return out


@torch.no_grad()
def answer(model: PreTrainedModel, tok: PreTrainedTokenizerBase, rows: list[dict[str, Any]], max_new_tokens: int,
           stop_ids: list[int]) -> list[dict]:
    """Greedy answers to the rows of `read_prompts`, formatted with the chat template."""
    out = []
    for row in rows:
        messages = row["messages"]
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0])
        text = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append({"language": row.get("language", "ja"), "messages": messages, "answer": text})
    return out


def chat_end(cfg: CoreConfig, tok: PreTrainedTokenizerBase) -> str | None:
    """The chat template's end-of-turn marker, a chat model's EOS; None when `tok` lacks it."""
    end = (cfg.tokenizer.tokens if cfg.tokenizer else SpecialTokens()).chat_end
    return end if end in tok.get_vocab() else None


def stop_ids(cfg: CoreConfig, tok: PreTrainedTokenizerBase) -> list[int]:
    """The chat turn's end, then EOS (generation stops at the end of the assistant's turn), without repeats."""
    end = chat_end(cfg, tok)
    ids = ([tok.convert_tokens_to_ids(end)] if end else []) + [tok.eos_token_id]
    return list(dict.fromkeys(i for i in ids if i is not None))


@dataclass(frozen=True)
class CodeSwitch:
    """Share of Japanese answers with spans of unexpected scripts or languages."""

    rate: float | None
    flagged: int
    japanese_answers: int
    examples: list[dict[str, Any]]


def code_switch(answers: list[dict[str, Any]], detector: LangMixDetector, keep: int = 5) -> CodeSwitch:
    """Run the data filter's language-mixing detector over the Japanese answers."""
    ja = [a for a in answers if a["language"] == "ja"]
    flagged = [(a, detector.findings(a["answer"])) for a in ja]
    flagged = [(a, f) for a, f in flagged if f]
    examples = [{"answer": a["answer"], "findings": [str(x) for x in f]} for a, f in flagged[:keep]]
    return CodeSwitch(rate=len(flagged) / len(ja) if ja else None, flagged=len(flagged),
                      japanese_answers=len(ja), examples=examples)


def benchmark_commands(model_dir: Path, name: str, lm_eval_tasks: str) -> dict[str, str]:
    """Commands to run on a GPU node against the HF folder (printed, never run here): llm-jp-eval, and the
    whole Japanese leaderboard of lm-evaluation-harness (its other tasks load their data from the hub).

    Every word is shell-quoted, so a folder with spaces or `$` pastes as it is; lm-eval reads `--model_args`
    as JSON (a path with a comma would split its key=value form), Hydra reads a quoted override value."""
    m = str(model_dir.resolve())
    model_args = json.dumps({"pretrained": m, "dtype": "bfloat16"}, ensure_ascii=False)
    return {
        "llm-jp-eval": shlex.join(["python", "scripts/evaluate_llm.py", "-cn", "config.yaml",
                                   f"model.pretrained_model_name_or_path={hydra_value(m)}",
                                   f"tokenizer.pretrained_model_name_or_path={hydra_value(m)}",
                                   "dataset_dir=<llm-jp-eval datasets>/evaluation/test"])
                       + "  # in a checkout of github.com/llm-jp/llm-jp-eval",
        "lm-evaluation-harness": shlex.join(["lm_eval", "--model", "hf", "--model_args", model_args,
                                             "--tasks", lm_eval_tasks, "--batch_size", "auto",
                                             "--output_path", f"results/{name}"]),
    }


def hydra_value(text: str) -> str:
    """`text` as one Hydra override value: single-quoted, a quote and the backslashes before it escaped (Hydra
    would otherwise read `,` as a sweep and `=`, brackets or spaces as grammar)."""
    escaped = re.sub(r"(\\*)'", lambda match: match[1] * 2 + "\\'", text)
    return "'" + re.sub(r"(\\+)$", lambda match: match[1] * 2, escaped) + "'"


def markdown(report: dict[str, Any]) -> str:
    """report.md: the same figures as report.json, for people."""
    lines = [f"# Eval: {report['model']}", ""]
    if report["perplexity"]:
        lines += ["| language | perplexity | tokens | documents |", "|---|---|---|---|"]
    for lang, p in report["perplexity"].items():
        lines.append(f"| {lang} | {p['perplexity']:.3f} | {p['tokens']} | {p['documents']} |")
    cs = report.get("code_switch")
    if cs:
        rate = "n/a" if cs["rate"] is None else f"{cs['rate']:.1%}"
        lines += ["", f"Code-switch rate: {rate} ({cs['flagged']} of {cs['japanese_answers']} Japanese answers)"]
        lines += [f"- {e['answer'][:80]!r}: {'; '.join(e['findings'])}" for e in cs["examples"]]
    lines += [""] + markdown_lines(report)
    lines += ["## Hand-off commands for a GPU node (not run here)", ""]
    lines += [f"- {k}: `{v}`" for k, v in report["commands"].items()]
    return "\n".join(lines) + "\n"
