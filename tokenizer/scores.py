"""Unigram piece scores on a dyadic grid, so that SentencePiece and Hugging Face tokenizers segment alike.

Both run the same Viterbi search (pieces starting earliest win among equal path scores), but SentencePiece
adds scores in float32 and `tokenizers` in float64. Where two segmentations score the same mathematically
(a run of spaces cut as 1+2 or 2+1, "----" as 2+2 or 1+3 when the scores allow), the rounding of each
implementation decides, and they decide differently. With every score a multiple of SCORE_GRID, path
scores are sums of grid steps, exact in both precisions: equal paths compare equal in both, and the shared
tie rule picks the same one.
"""

from __future__ import annotations

from pathlib import Path

from factory.io import atomic_write_bytes, atomic_write_text

SCORE_GRID = 1 / 64
"""Path scores stay exact in float32 down to -2**18 (24 bits of mantissa at 1/64 steps): about 20,000 pieces
of one encoded segment at typical scores of -10 to -13; each score moves by at most 1/128 (0.8% in
probability)."""


def on_grid(score: float) -> float:
    return round(score / SCORE_GRID) * SCORE_GRID


def quantize_scores(model_file: Path) -> int:
    """Round the scores of the learned pieces of a unigram `model_file` to SCORE_GRID, rewrite it and the
    `.vocab` beside it; returns how many scores changed. Control, user-defined and byte pieces keep 0."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    changed = 0
    for piece in proto.pieces:
        if piece.type == model_pb2.ModelProto.SentencePiece.NORMAL and piece.score != on_grid(piece.score):
            piece.score = on_grid(piece.score)
            changed += 1
    atomic_write_bytes(model_file, proto.SerializeToString())
    vocab = "".join(f"{piece.piece}\t{piece.score:.9g}\n" for piece in proto.pieces)
    atomic_write_text(model_file.with_suffix(".vocab"), vocab)
    return changed


def scores_on_grid(model_file: Path) -> bool:
    """Whether every learned piece of `model_file` scores a multiple of SCORE_GRID."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    return all(sp.get_score(i) == on_grid(sp.get_score(i)) for i in range(sp.get_piece_size()))
