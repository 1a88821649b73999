"""Every stage of the factory, in chain order: the one list the CLI, pipeline, launcher, config and report read.

Adding a stage: write its `*_stage.py` module (plan, run and a `Stage` constant) and add it here.
"""

from __future__ import annotations

from factory.convert.export_stage import STAGE as EXPORT
from factory.convert.import_stage import STAGE as IMPORT
from factory.data.data_stage import STAGE as DATA
from factory.data.pack_stage import STAGE as PACK
from factory.errors import ConfigError
from factory.posttrain.dpo_stage import STAGE as DPO
from factory.posttrain.eval_stage import STAGE as EVAL
from factory.posttrain.sft_stage import STAGE as SFT
from factory.stage_api import Stage
from factory.synth.synth_stage import STAGE as SYNTH
from factory.train.training_stage import CPT, PRETRAIN
from factory.upcycle.upcycle_stage import STAGE as UPCYCLE
from tokenizer.tokenizer_stage import STAGE as TOKENIZER

CHAIN: tuple[Stage, ...] = (TOKENIZER, DATA, PACK, PRETRAIN, SYNTH, UPCYCLE, IMPORT, CPT, EXPORT, SFT, DPO, EVAL)
"""Each stage after the stages it reads from."""
STAGES: dict[str, Stage] = {stage.name: stage for stage in CHAIN}


def stage(name: str) -> Stage:
    """The stage called `name`; a ConfigError listing the stages otherwise."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}' (stages: {', '.join(STAGES)})")
    return STAGES[name]


def chain_problems(chain: tuple[Stage, ...]) -> list[str]:
    """Why `chain` is not a valid registry: a name or section key used twice, or a stage before what it reads."""
    out: list[str] = []
    names: set[str] = set()
    keys: set[str] = set()
    for s in chain:
        out += [f"stage '{s.name}' is registered twice"] if s.name in names else []
        out += [f"stage '{s.name}' reads from '{a}', which is not an earlier stage" for a in s.after if a not in names]
        out += [f"stage '{s.name}': section '{k.key}' is owned by an earlier stage" for k in s.sections if k.key in keys]
        names.add(s.name)
        keys.update(k.key for k in s.sections)
    return out
