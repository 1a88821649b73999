"""Nothing a run did is lost on a re-run: a finished run keeps its record, a continued run merges it, and a
resume that would read other data, or a train_iters below the checkpoint, is refused with one line."""

from __future__ import annotations

import json

import pytest

from factory.errors import CheckpointError, ConfigError
from factory.registry import STAGES
from factory.runner import run_stage
from tests.train.conftest import losses, train_config


def _manifest(run_dir, stage="pretrain") -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_rerunning_a_finished_run_keeps_its_record_and_a_longer_run_merges_it(packed_data, tmp_path, caplog):
    cfg = train_config(packed_data, tmp_path, train_iters=4, eval_interval=4)
    run_stage(STAGES["pretrain"], cfg)
    first = _manifest(tmp_path)
    assert first["metrics"]["final_loss"] is not None and first["metrics"]["final_valid_loss"] is not None
    again = run_stage(STAGES["pretrain"], cfg).to_dict()
    assert again == first == _manifest(tmp_path)
    assert any("already at iteration 4 of 4" in r.getMessage() and "nothing to do" in r.getMessage()
               for r in caplog.records)
    longer = run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=6)).to_dict()
    metrics = longer["metrics"]
    assert metrics["steps"] == 6 and metrics["steps_this_run"] == 2 and metrics["final_loss"] == losses(tmp_path)[-1]
    assert metrics["final_valid_loss"] == first["metrics"]["final_valid_loss"]  # kept: this run evaluated nothing
    assert [r["started_at"] for r in longer["history"]] == [first["started_at"]]
    assert longer["wall_seconds_total"] >= longer["wall_seconds"] + first["wall_seconds"] - 0.01


def test_train_iters_below_the_checkpoint_is_a_config_error_naming_both(packed_data, tmp_path):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4))
    with pytest.raises(ConfigError, match=r"^pretrain.train_iters=2: below iteration 4, which its checkpoint .* "
                                          r"already reached; set train_iters >= 4"):
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))


@pytest.mark.parametrize("change, key", [({"seed": 99}, "seed"), ({"split": "90,10,0"}, "split")])
def test_resume_with_other_data_refuses_naming_the_key(packed_data, tmp_path, change, key):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))
    with pytest.raises(ConfigError) as info:
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4, **change))
    lines = info.value.problems
    assert "would read other samples than the run it continues" in lines[0]
    assert any(line.strip().startswith(f"{key} ") and "when the run started" in line for line in lines)
    assert "cpt.init_from=" in lines[-1]


def test_resume_with_another_sequence_length_refuses_naming_it(packed_data, tmp_path):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))
    with pytest.raises(CheckpointError, match="model.seq_length: config 16 vs checkpoint 32"):
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4, model={"seq_length": 16}))


def test_resume_after_the_blend_changed_refuses(packed_data, tmp_path):
    blend = tmp_path / "blend.json"
    blend.write_text((packed_data / "pack" / "blend.json").read_text())
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2, blend_file=str(blend)))
    data = json.loads(blend.read_text())
    data["phases"][0]["prefixes"] *= 2
    data["phases"][0]["weights"] = [0.5, 0.5]
    blend.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="blend '[0-9a-f]{64}' when the run started"):
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4, blend_file=str(blend)))


def test_a_longer_run_whose_dataset_reorders_the_consumed_samples_is_refused(packed_data, tmp_path):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))
    # Thousands of samples span more epochs of the small corpus: GPTDataset shuffles them in another order.
    with pytest.raises(ConfigError) as info:
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2000))
    assert any("train_iters: a dataset built for 8000 samples (was 8)" in line for line in info.value.problems)
