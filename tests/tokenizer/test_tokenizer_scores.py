"""Unigram scores on a grid: the HF export gives SentencePiece's ids on whitespace runs, tabs, newlines and
mixed scripts, where off-grid scores let float32 and float64 rounding pick different equal-score paths."""

from __future__ import annotations

import random
import shutil

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from transformers import AutoTokenizer

import pytest

from tests.tokenizer.conftest import TRICKY, fixture_lines, train
from tokenizer import hf
from tokenizer.config import SpecialTokens
from tokenizer.scores import SCORE_GRID, on_grid, quantize_scores, scores_on_grid

RUNS = [" ", "\t", " \t", "\u3000", "-", "=", "ab", "。", "ー"]


def run_texts() -> list[str]:
    """Runs of 1-40 repeats of each unit alone, inside Japanese and English, and across newlines."""
    out = []
    for unit in RUNS:
        for n in range(1, 41):
            run = unit * n
            out += [run, f"日本語{run}English{run}テキスト", f"a{run}b\n{run}次の行\n\n{run}",
                    f"|{run}|表の{run}セル{run}|"]
    return out


def mixed_lines(seed: int = 0, count: int = 300) -> list[str]:
    """Fixture sentences joined by random whitespace runs, tabs and newlines."""
    rng = random.Random(seed)
    lines = fixture_lines()
    gaps = [" " * k for k in range(1, 12)] + ["\t", "\t\t", " \t ", "\n", "\n\n", "\u3000"]
    return ["".join(rng.choice(lines) + rng.choice(gaps) for _ in range(rng.randint(1, 4))) for _ in range(count)]


@pytest.fixture(scope="module")
def runs_model(tmp_path_factory):
    """A unigram model trained on text full of whitespace runs, so it has multi-space pieces."""
    folder = tmp_path_factory.mktemp("runs")
    text = folder / "runs.txt"
    text.write_text("".join(line.replace("\n", " ") + "\n" for line in mixed_lines(seed=1, count=1500)),
                    encoding="utf-8")
    out = folder / "tokenizer"
    report = train([text], out, model_type="unigram")
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert any(set(sp.id_to_piece(i)) == {"▁"} and len(sp.id_to_piece(i)) > 1 for i in range(sp.get_piece_size()))
    return out, report


def mismatches(folder, texts: list[str]) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return [t for t, ids in zip(texts, tok(texts, add_special_tokens=False)["input_ids"]) if ids != sp.encode(t)]


def test_on_grid_rounds_to_multiples_of_the_grid():
    assert on_grid(-10.0) == -10.0
    assert on_grid(-3.3) == -3.296875
    assert on_grid(-3.3) / SCORE_GRID == round(on_grid(-3.3) / SCORE_GRID)


def test_trained_unigram_scores_are_on_the_grid(trained):
    unigram, _ = trained(model_type="unigram")
    assert scores_on_grid(unigram / "tokenizer.model")
    assert quantize_scores(unigram / "tokenizer.model") == 0  # already on the grid


@pytest.mark.parametrize("model", ["runs_model", "trained"])
def test_unigram_hf_ids_equal_sentencepiece_ids_on_runs_tabs_newlines_and_mixed_scripts(model, request):
    out, report = request.getfixturevalue(model) if model == "runs_model" else \
        request.getfixturevalue(model)(model_type="unigram")
    assert mismatches(out, run_texts() + mixed_lines() + TRICKY + fixture_lines()) == []
    assert report["heldout"]["hf_sp_id_mismatches"] == 0


def test_off_grid_scores_make_hf_and_sentencepiece_disagree_and_the_grid_repairs_it(runs_model, tmp_path):
    """The same model with its scores nudged off the grid (as SentencePiece trains them) disagrees on
    equal-score paths; quantize_scores makes it agree again."""
    out, _ = runs_model
    folder = tmp_path / "off-grid"
    folder.mkdir()
    proto = model_pb2.ModelProto()
    proto.ParseFromString((out / "tokenizer.model").read_bytes())
    rng = random.Random(0)
    for piece in proto.pieces:
        if piece.type == model_pb2.ModelProto.SentencePiece.NORMAL:
            piece.score += rng.uniform(-1, 1) * SCORE_GRID / 4
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    texts = run_texts() + mixed_lines()
    hf.export(folder, SpecialTokens())
    assert mismatches(folder, texts)
    assert quantize_scores(folder / "tokenizer.model") > 0
    for name in hf.HF_FILES:
        (folder / name).unlink()
    hf.export(folder, SpecialTokens())
    assert mismatches(folder, texts) == []
    shutil.rmtree(folder)
