"""What a stage declares: its own section (a one-line error naming it when absent) and whether it is configured."""

import pytest

from factory.config import validate_config
from factory.errors import ConfigError
from factory.registry import STAGES
from factory.stage_api import Launch


def test_section_of_names_the_missing_section_and_what_it_is_for(tmp_path):
    bare = validate_config({"run": {"name": "t", "dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^import: the config has no 'hf_import' section \(Hugging Face folder"):
        STAGES["import"].section_of(bare)
    assert not STAGES["pack"].configured(bare)


def test_a_stages_cross_section_checks_run_when_any_of_its_sections_is_present(tmp_path):
    with pytest.raises(ConfigError) as info:  # blend without pack: the pack stage's check names the key
        validate_config({"run": {"name": "t", "dir": str(tmp_path)},
                         "blend": {"phases": [{"name": "p", "datasets": [{"dataset": "x", "weight": 1}]}]}})
    assert info.value.problems == ["<config>: blend.phases[0].datasets=x: not a pack dataset (known: none)"]


def test_launch_kinds_are_declared_by_the_stages():
    assert {s.name for s in STAGES.values() if s.launch is Launch.MEGATRON} == {"pretrain", "cpt"}
    assert {s.name for s in STAGES.values() if s.launch is Launch.DATA_PARALLEL} == {"sft", "dpo"}
    assert {s.name for s in STAGES.values() if s.job_array} == {"tokenizer", "data", "synth", "pack"}
