"""The `launch:` section: time limits, signal lead, environment, container vs venv."""

from __future__ import annotations

import pytest

from factory.config import validate_config
from factory.errors import ConfigError
from factory.launch_config import NCCL_ENV, LaunchConfig, time_seconds

RUN = {"run": {"name": "t", "dir": "runs/t"}}


def _problems(**launch) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate_config({**RUN, "launch": launch})
    return e.value.problems


@pytest.mark.parametrize("text,seconds", [("00:30:00", 1800), ("2-01:00:05", 176405), ("48:00:00", 172800)])
def test_time_formats(text, seconds):
    assert time_seconds(LaunchConfig(time=text).time) == seconds


def test_time_read_by_yaml_as_seconds_is_accepted():
    # YAML 1.1 reads an unquoted 12:00:00 as 43200
    assert LaunchConfig(time=43200).time == "12:00:00"
    assert LaunchConfig(time=93600).time == "1-02:00:00"


def test_bad_time_and_signal_lead_are_reported_together():
    problems = _problems(time="1:2", venv=".venv", container_image="img", env={"A-B": "1"})
    assert any(p.endswith('launch.time=1:2: expected "HH:MM:SS" or "D-HH:MM:SS"') for p in problems)
    assert any("launch.venv=.venv: set either launch.venv or launch.container_image" in p for p in problems)
    assert any("launch.env=A-B: not a valid variable name" in p for p in problems)
    assert any("must be shorter than launch.time" in p for p in _problems(time="00:05:00"))


def test_env_values_become_text_and_nccl_defaults_apply():
    cfg = validate_config({**RUN, "launch": {"env": {"NCCL_IB_GID_INDEX": 3, "X": True}}})
    assert cfg.launch.env == {"NCCL_IB_GID_INDEX": "3", "X": "true"}
    assert cfg.launch.nccl_env == NCCL_ENV and NCCL_ENV["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"


def test_mounts_need_a_container_and_sbatch_options_start_with_a_dash():
    problems = _problems(container_mounts=["/a:/a"], extra_sbatch=["exclusive"])
    assert any("launch.container_mounts" in p and "needs launch.container_image" in p for p in problems)
    assert any("launch.extra_sbatch=exclusive" in p for p in problems)


def test_per_stage_launch_keys_are_checked_like_the_section_and_name_the_stage():
    problems = _problems(stages={"pretrain": {"nodes": 0}, "tokenizer": {"array": None, "time": "1:2"},
                                 "cpt": {"time": "00:01:00"}, "typo": {"nodes": 2}})
    assert any(p.endswith("launch.stages.pretrain.nodes=0: Input should be greater than or equal to 1") for p in problems)
    assert any(p.endswith("launch.stages.tokenizer.array: set for the whole launch section, not per stage")
               for p in problems)
    assert any("launch.stages.cpt.signal_seconds_before_timeout=300: must be shorter" in p for p in problems)
    assert any(p.endswith("launch.stages=typo: not a stage (stages: tokenizer, data, pack, pretrain, synth, upcycle, "
                          "import, cpt, export, sft, dpo, eval)") for p in problems)


def test_a_stage_gets_its_own_keys_over_the_section():
    cfg = validate_config({**RUN, "launch": {"nodes": 2, "partition": "gpu", "stages": {
        "pretrain": {"nodes": 8, "time": "7-00:00:00"}, "tokenizer": {"partition": "cpu", "gpus_per_node": 0}}}})
    pretrain, tokenizer, export = (cfg.launch.for_stage(s) for s in ("pretrain", "tokenizer", "export"))
    assert (pretrain.nodes, pretrain.partition, pretrain.time) == (8, "gpu", "7-00:00:00")
    assert (tokenizer.nodes, tokenizer.partition, tokenizer.gpus_per_node) == (2, "cpu", 0)
    assert export == cfg.launch


def test_nccl_defaults_free_async_collective_tensors_and_expand_allocator_segments():
    assert NCCL_ENV["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    assert NCCL_ENV["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


@pytest.mark.parametrize("mode", ["node", "socket", "exclusive", "core-complex"])
def test_cpu_bind_becomes_torchruns_numa_binding_with_a_mode_torchrun_knows(mode):
    import subprocess
    import sys

    from factory.launch.commands import torchrun_options

    cfg = validate_config({**RUN, "launch": {"cpu_bind": mode}})
    options = torchrun_options(cfg.launch)
    assert options[options.index("--numa-binding") + 1] == mode
    assert "--numa-binding" not in torchrun_options(validate_config(RUN).launch)  # none: the OS places processes
    usage = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"], capture_output=True,
                           text=True, timeout=60).stdout
    assert "--numa-binding {node,socket,exclusive,core-complex}" in usage
