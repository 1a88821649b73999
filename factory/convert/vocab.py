"""Vocabulary extension for continued pretraining of an imported model (the Swallow route).

Japanese pieces of a trained tokenizer are appended to the imported model's SentencePiece BPE tokenizer,
below every existing piece in merge priority: BPE applies all old merges first, so text whose new ids
contain no new piece keeps its old ids. The HF tokenizer.json gets the same pieces as vocabulary and trailing merges. The embedding and output layers get a row per new piece, the mean
of the rows of the old pieces it decomposes into. Verified before anything appears: old ids give the same
logits, text without new pieces gives the same ids, and the HF export gives SentencePiece's ids.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from factory.convert.config import ImportConfig, ProbeConfig, VocabExtensionConfig
from factory.convert.verify import compare, megatron_logits, probe_tokens
from factory.errors import ConfigError, VerificationError
from factory.io import atomic_dir
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.strict_json import read_json_object
from factory.train.checkpoint_meta import VocabExtension
from factory.writing_systems import JAPANESE
from tokenizer.corpus import iter_lines

if TYPE_CHECKING:  # for annotations only
    from sentencepiece.sentencepiece_model_pb2 import ModelProto

    from factory.convert.hf_import import ImportResult

VOCAB_ROWS = ("embedding.word_embeddings.weight", "output_layer.weight")


def _proto(data: bytes):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(data)
    return proto


def _processor(proto):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def extended_model(base: ModelProto, japanese: ModelProto, max_new_pieces: int) -> tuple[ModelProto, list[str]]:
    """`base` (a SentencePiece BPE ModelProto) with up to `max_new_pieces` Japanese pieces of `japanese`
    appended, in the Japanese model's order; each piece's missing characters come first, so every new
    piece is a merge of two symbols already in the vocabulary, as HF's BPE merges need."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    normal = model_pb2.ModelProto.SentencePiece.NORMAL
    known = {p.piece for p in base.pieces}
    scores = new_scores(min((p.score for p in base.pieces if p.type == normal), default=0.0), max_new_pieces)
    extended, added = model_pb2.ModelProto(), []
    extended.CopyFrom(base)

    def add(piece: str) -> None:
        extended.pieces.add(piece=piece, score=scores[len(added)], type=normal)
        known.add(piece)
        added.append(piece)

    for candidate in japanese.pieces:
        text = candidate.piece
        if candidate.type != normal or text in known or "▁" in text or not JAPANESE.search(text):
            continue
        missing = [c for c in dict.fromkeys(text) if c not in known]
        if len(added) + len(missing) + (len(text) > 1) > max_new_pieces:
            break
        for char in missing:
            add(char)
        if len(text) > 1 and any(text[:i] in known and text[i:] in known for i in range(1, len(text))):
            add(text)
    return extended, added


def new_scores(lowest: float, count: int) -> list[float]:
    """`count` scores below `lowest`, strictly decreasing in float32 (SentencePiece's precision): base models
    park pieces far down (Mistral's whitespace runs at -1e9, where float32 steps are 64), and two new pieces
    of equal score would be merged by position in SentencePiece but by rank in HF."""
    import numpy as np

    step = 1.0
    while True:
        scores = np.float32(lowest) - np.float32(step) * np.arange(1, count + 1, dtype=np.float64)
        scores = scores.astype(np.float32)
        if count == 0 or (scores[0] < np.float32(lowest) and np.all(np.diff(scores) < 0)):
            return scores.tolist()
        step *= 2


def decompositions(base: ModelProto, added: list[str]) -> dict[int, list[int]]:
    """New id -> the base ids its text encodes to (without a dummy prefix), for initialising its rows."""
    plain = type(base)()
    plain.CopyFrom(base)
    plain.normalizer_spec.add_dummy_prefix = False
    sp = _processor(plain)
    first = len(base.pieces)
    return {first + i: sp.encode(piece.replace("▁", " ")) for i, piece in enumerate(added)}


def resized(matrix: torch.Tensor, rows: int, real_rows: int, parts: dict[int, list[int]]) -> torch.Tensor:
    """`matrix` with `rows` rows: its first `real_rows` kept, each new id the mean of its parts' rows."""
    out = torch.zeros((rows, *matrix.shape[1:]), dtype=matrix.dtype)
    out[:real_rows] = matrix[:real_rows]
    for new_id, ids in parts.items():
        out[new_id] = matrix[ids].mean(dim=0)
    return out


def write_hf_tokenizer(base_dir: Path, out_dir: Path, proto: ModelProto, added: list[str]) -> None:
    """The base folder's tokenizer files with the extended tokenizer.model, and its tokenizer.json with the
    new pieces appended to the BPE vocabulary and, for each, its merges after all existing ones (the
    priority SentencePiece gives them); normalizer and pre-tokenizer stay as the base had them."""
    for item in base_dir.iterdir():
        if item.is_file() and item.name != "tokenizer.model":
            shutil.copy2(item, out_dir / item.name)
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    path = out_dir / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"hf_import.extend_vocab: {base_dir} has no tokenizer.json")
    spec = read_json_object(path, ConfigError)
    model, first = spec.get("model") or {}, len(proto.pieces) - len(added)
    if model.get("type") != "BPE":
        raise ConfigError(f"hf_import.extend_vocab: {path} holds a {model.get('type')} model, not BPE")
    highest = max([*model["vocab"].values(), *(t["id"] for t in spec.get("added_tokens", []))])
    if highest >= first:
        raise ConfigError(f"hf_import.extend_vocab: {path} has ids up to {highest}, beyond tokenizer.model's "
                          f"{first} pieces; the new pieces would collide with them")
    vocab, as_lists = model["vocab"], all(isinstance(m, list) for m in model["merges"])
    for i, piece in enumerate(added):
        vocab[piece] = first + i
        for cut in range(1, len(piece)):
            if piece[:cut] in vocab and piece[cut:] in vocab:
                pair = [piece[:cut], piece[cut:]]
                model["merges"].append(pair if as_lists else " ".join(pair))
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


@dataclass
class ExtensionResult:
    base_size: int
    size: int
    added: list[str]
    figures: dict[str, float | int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int]:
        return {"vocab_base": self.base_size, "vocab_extended": self.size, "vocab_added": len(self.added),
                **self.figures}


def _text_lines(section: VocabExtensionConfig) -> list[str]:
    lines = []
    for line in iter_lines(section.text, section.text_field):
        lines.append(line)
        if len(lines) >= section.max_lines:
            break
    if not lines:
        raise ConfigError(f"hf_import.extend_vocab.text: no text in {', '.join(map(str, section.text))}")
    return lines


def check_ids(base: ModelProto, extended: ModelProto, base_folder: Path, folder: Path,
              lines: list[str]) -> dict[str, float | int]:
    """Ids of old and extended tokenizers on `lines`: unchanged where no new piece is used, and HF equal to
    SentencePiece wherever the base's HF files agreed with its tokenizer.model; returns characters per
    token before and after (all lines and Japanese lines)."""
    from transformers import AutoTokenizer

    old, new = _processor(base), _processor(extended)
    base_hf = AutoTokenizer.from_pretrained(base_folder, local_files_only=True)
    hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    first_new = len(base.pieces)
    before, after = old.encode(lines), new.encode(lines)
    served = hf(lines, add_special_tokens=False)["input_ids"]
    base_agrees = [a == b for a, b in zip(before, base_hf(lines, add_special_tokens=False)["input_ids"])]
    changed = [line for line, a, b in zip(lines, before, after) if a != b and max(b, default=0) < first_new]
    if changed:
        raise VerificationError(f"vocab extension: {len(changed)} line(s) without new pieces changed ids, "
                                f"e.g. {changed[0][:60]!r}; nothing was written")
    differ = [line for line, a, b, agreed in zip(lines, after, served, base_agrees) if agreed and a != b]
    if differ:
        raise VerificationError(f"vocab extension: the HF tokenizer and SentencePiece disagree on {len(differ)} "
                                f"line(s), e.g. {differ[0][:60]!r}; nothing was written")
    japanese = [i for i, line in enumerate(lines) if JAPANESE.search(line)]
    chars = sum(map(len, lines))
    ja_chars = sum(len(lines[i]) for i in japanese)
    return {"chars_per_token_before": round(chars / max(1, sum(map(len, before))), 4),
            "chars_per_token_after": round(chars / max(1, sum(map(len, after))), 4),
            "ja_chars_per_token_before": round(ja_chars / max(1, sum(len(before[i]) for i in japanese)), 4),
            "ja_chars_per_token_after": round(ja_chars / max(1, sum(len(after[i]) for i in japanese)), 4),
            "lines_checked": len(lines), "lines_with_new_pieces": sum(max(b, default=0) >= first_new for b in after),
            "base_hf_sp_mismatches": base_agrees.count(False)}


def extend(base_root: Path, base_tokenizer: Path, out_root: Path, out_tokenizer: Path,
           section: VocabExtensionConfig, *, runtime_cfg: RuntimeConfig, probe: ProbeConfig) -> ExtensionResult:
    """Write the extended tokenizer and the resized checkpoint (atomically, both verified) from an imported
    checkpoint and its HF tokenizer folder."""
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint_stream import CheckpointReader, save_streaming

    base = _base_model(base_tokenizer)
    japanese_file = section.tokenizer_dir / "tokenizer.model"
    if not japanese_file.is_file():
        raise ConfigError(f"hf_import.extend_vocab.tokenizer_dir={section.tokenizer_dir}: no tokenizer.model")
    extended, added = extended_model(base, _proto(japanese_file.read_bytes()), section.max_new_pieces)
    result = ExtensionResult(len(base.pieces), len(extended.pieces), added)
    parts, lines, t0 = decompositions(base, added), _text_lines(section), time.perf_counter()
    runtime_cfg = runtime_cfg.model_copy(update={"precision": "fp32", "device": "cpu"})
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime, atomic_dir(out_root) as root, \
            atomic_dir(out_tokenizer) as tokenizer:
        write_hf_tokenizer(base_tokenizer, tokenizer, extended, added)
        result.figures.update(check_ids(base, extended, base_tokenizer, tokenizer, lines))
        reader = CheckpointReader(base_root, runtime)
        old_model = reader.info.model
        model = old_model.model_copy(update={"vocab_size": max(old_model.vocab_size, result.size)})

        def produce(name: str) -> torch.Tensor:
            tensor = reader.read([name])[name]
            if name not in VOCAB_ROWS:
                return tensor
            return resized(tensor, model.padded_vocab_size(), old_model.vocab_size, parts)

        meta = replace(reader.info.meta, vocab_extension=VocabExtension(len(added), str(section.tokenizer_dir)))
        save_streaming(root, model, runtime, produce, meta=meta)
        tokens = probe_tokens(probe, result.base_size, old_model.max_position_embeddings or old_model.seq_length)
        old_logits = megatron_logits(reader, tokens, runtime)[..., :result.base_size]
        new_logits = megatron_logits(CheckpointReader(root, runtime), tokens, runtime)[..., :result.base_size]
        result.figures["max_abs_logit_diff_old_ids"] = compare(old_logits, new_logits, probe.tolerance,
                                                               "vocab extension (old ids)")
    result.figures["extend_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _base_model(folder: Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    path = folder / "tokenizer.model"
    if not path.is_file():
        raise ConfigError(f"hf_import.extend_vocab: {folder} has no tokenizer.model; only SentencePiece BPE "
                          f"tokenizers (Llama-2, Mistral style) can be extended")
    base = _proto(path.read_bytes())
    if base.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        kind = model_pb2.TrainerSpec.ModelType.Name(base.trainer_spec.model_type)
        raise ConfigError(f"hf_import.extend_vocab: {path} is a {kind} model; only SentencePiece BPE "
                          f"tokenizers (Llama-2, Mistral style) can be extended")
    return base


def import_extended(import_hf: Callable[[Path, Path], ImportResult], import_config: ImportConfig, root: Path,
                    tokenizer: Path, runtime_cfg: RuntimeConfig) -> tuple[ImportResult, ExtensionResult]:
    """Run `import_hf` into a staging folder beside `root`, then extend into `root` and `tokenizer`;
    the staging folder is removed whatever happens. Returns (import result, extension result)."""
    staging = root.parent / f".{root.name}.unextended"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = import_hf(staging / "checkpoints", staging / "tokenizer")
        extension = extend(staging / "checkpoints", staging / "tokenizer", root, tokenizer, import_config.extend_vocab,
                           runtime_cfg=runtime_cfg, probe=import_config.probe)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result, extension
