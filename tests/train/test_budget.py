"""What a training plan says about its budget: a phase that repeats its data more than four times warns, with the
counts, in --dry-run and in the stage log."""

from __future__ import annotations

import json
import logging

from factory.data.indexed import token_count
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train.budget import MAX_USEFUL_EPOCHS, repetition
from tests.train.conftest import train_config


def _prefix(blend):
    return json.loads(blend.read_text())["phases"][0]["prefixes"][0]


def test_repetition_warns_past_four_epochs_with_the_counts(packed_data, tmp_path):
    blend = packed_data / "pack" / "blend.json"
    data = token_count(_prefix(blend))
    assert data == json.loads((packed_data / "pack" / "manifest.json").read_text())["metrics"]["tokens"]
    assert repetition(blend, "main", MAX_USEFUL_EPOCHS * data) is None
    line = repetition(blend, None, 10 * data)
    assert line == (f"phase main reads docs_text_document ~10 times ({10 * data:,} training tokens over {data:,} tokens of data); "
                    "beyond 4 epochs repeated tokens add little (Muennighoff et al. 2023): add data to the phase or "
                    "give it fewer tokens")
    assert repetition(tmp_path / "absent.json", "main", 10 * data) is None  # before pack: nothing to say yet


def _tiny_blend(packed, folder):
    """Two short documents packed as blend phase `tiny` (a synthetic phase as small as the demo's)."""
    from factory.config import validate_config

    folder.mkdir()
    docs = folder / "tiny.jsonl"
    docs.write_text('{"text": "東京都は日本の首都です。"}\n{"text": "The quick brown fox."}\n', encoding="utf-8")
    cfg = validate_config({"run": {"name": "tiny", "dir": str(folder)},
                           "pack": {"datasets": [{"name": "tiny", "path": str(docs)}], "num_workers": 1,
                                    "tokenizer_dir": str(packed / "tokenizer")},
                           "blend": {"phases": [{"name": "tiny", "datasets": [{"dataset": "tiny", "weight": 1}]}]}})
    run_stage(STAGES["pack"], cfg)
    return folder / "pack" / "blend.json"


def test_dry_run_prints_the_warning_and_the_run_logs_it(packed_data, tmp_path, capsys, caplog):
    blend = _tiny_blend(packed_data, tmp_path / "tiny")
    data = token_count(_prefix(blend))
    phases = [{"phase": "main", "until_tokens": 2 * 4 * 32}, {"blend_file": str(blend), "phase": "tiny"}]
    cfg = train_config(packed_data, tmp_path / "run", train_iters=6, phases=phases)  # 4 x 128 tokens of tiny
    assert run_stage(STAGES["pretrain"], cfg, dry_run=True) is None
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# warning:")]
    expected = f"phase tiny reads tiny_text_document ~{512 / data:,.0f} times (512 training tokens over {data:,} tokens of data)"
    assert len(warnings) == 1 and warnings[0].startswith(f"# warning: {expected}"), (warnings, data)
    assert STAGES["pretrain"].plan(train_config(packed_data, tmp_path / "plain", train_iters=4)).warnings == []
    with caplog.at_level(logging.WARNING, logger="factory.runner"):
        run_stage(STAGES["pretrain"], cfg)
    assert [r.getMessage() for r in caplog.records if "Muennighoff" in r.getMessage()] == \
        [f"pretrain: {warnings[0].removeprefix('# warning: ')}"]


def test_the_disk_plan_counts_kept_checkpoints_and_their_size(packed_data, tmp_path):
    from factory.config import load_config
    from factory.model.build import parameter_counts
    from factory.train.budget import checkpoint_disk, kept_iterations

    llm_jp = load_config("configs/llm-jp-3-172b.yaml").pretrain  # saves every 250, keeps 2 + every 1,000th
    recent, every = kept_iterations(llm_jp)
    assert recent == [292750, 292812] and every == list(range(1000, 292001, 1000))
    line = checkpoint_disk(llm_jp, 172_400_850_000, 2)
    assert "2.41 TB each" in line and "x 14 bytes" in line and "the last 2 + 292 for keep_every" in line
    assert "= 709.60 TB (105.51 TB with checkpoint.keep_every_optimizer=false)" in line
    # against a real save: fp32 weights + Adam moments, 12 bytes per parameter
    cfg = train_config(packed_data, tmp_path, train_iters=2)
    run_stage(STAGES["pretrain"], cfg)
    folder = tmp_path / "pretrain" / "checkpoints" / "iter_0000002"
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    planned = float(checkpoint_disk(cfg.pretrain, parameter_counts(cfg.model).total, 4).split(" MB each")[0]
                    .split("checkpoints: ")[1]) * 1e6
    assert abs(planned - on_disk) / on_disk < 0.15, (planned, on_disk)
