"""Config loading, overrides, inheritance and validation: every problem is one line naming its key."""

from pathlib import Path

import pytest

from factory.config import load_config, validate_config
from factory.errors import ConfigError
from tests.conftest import TINY_DENSE, TINY_MOE, make_config

CONFIGS = sorted(Path("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    sections = {k for k, v in cfg.model_dump().items() if v is not None} - {"run", "runtime", "parallel"}
    assert cfg.run.name and sections  # a preset configures at least one stage


def test_tanuki_8x8b_inherits_8b_shapes():
    dense, moe = load_config("configs/tanuki-8b.yaml"), load_config("configs/tanuki-8x8b.yaml")
    assert moe.model.hidden_size == dense.model.hidden_size == 4096
    assert moe.model.num_query_groups == 8 and moe.model.ffn_hidden_size == 14336
    assert dense.model.moe is None and moe.model.moe.num_experts == 8 and moe.model.moe.router_topk == 2
    assert moe.parallel.pipeline == 4 and moe.run.name == "tanuki-8x8b"
    assert dense.pretrain is not None and moe.pretrain is None  # `pretrain: null` drops the inherited section
    assert moe.upcycle.source_tokens == 1.08e12


def test_llm_jp_3_172b_has_the_published_shapes():
    from factory.model.build import parameter_counts

    cfg = load_config("configs/llm-jp-3-172b.yaml")
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups) == \
        (96, 12288, 38464, 96, 16)
    assert m.padded_vocab_size(cfg.parallel.tensor) == 99840  # the vocab_size of its HF config.json
    assert 172e9 < parameter_counts(m).total < 173e9
    tokens = cfg.pretrain.train_iters * cfg.pretrain.global_batch_size * m.seq_length
    assert abs(tokens - 2_072_488_058_295) / 2_072_488_058_295 < 1e-5  # the tokens its exp2 card reports
    assert cfg.pretrain.checkpoint.keep_every == 1000 and cfg.runtime.transformer_engine == "required"


def test_overrides_are_typed_and_nested():
    cfg = load_config("configs/demo-cpu.yaml", [
        "model.num_layers=2", "runtime.seed=7", "model.rotary_base=5e5",
        "model.moe.num_experts=4", "model.moe.token_dispatcher=allgather", "run.dir=/tmp/x"])
    assert cfg.model.num_layers == 2 and cfg.runtime.seed == 7 and cfg.model.rotary_base == 500000.0
    assert cfg.model.moe.num_experts == 4 and str(cfg.run.dir) == "/tmp/x"


def _problems(raw_or_cfg, overrides=()):
    with pytest.raises(ConfigError) as err:
        if isinstance(raw_or_cfg, dict):
            validate_config(raw_or_cfg)
        else:
            load_config(raw_or_cfg, overrides)
    return err.value.problems


def test_heads_not_dividing_hidden_names_the_key():
    problems = _problems("configs/demo-cpu.yaml", ["model.num_attention_heads=7"])
    assert all("num_attention_heads" in p for p in problems)
    assert any("hidden_size (128) must be divisible by num_attention_heads" in p for p in problems)


@pytest.mark.parametrize("sections, key, rule", [
    ({"model": {"num_query_groups": 3}}, "model.num_query_groups=3", "num_attention_heads (4) must be divisible"),
    ({"parallel": {"tensor": 8}}, "model.num_attention_heads=4", "divisible by parallel.tensor (8)"),
    ({"parallel": {"tensor": 4}}, "model.num_query_groups=2", "divisible by parallel.tensor (4)"),
    ({"parallel": {"pipeline": 3}}, "model.num_layers=2", "divisible by parallel.pipeline (3)"),
    ({"parallel": {"context": 2}}, "parallel.context=2", "context parallelism is not supported"),
    ({"parallel": {"expert": 2}}, "parallel.expert=2", "expert parallelism needs model.moe"),
    ({"parallel": {"sequence_parallel": True}}, "parallel.sequence_parallel=True", "needs parallel.tensor > 1"),
    ({"model": {"seq_length": 4096, "max_position_embeddings": 2048}}, "model.seq_length=4096", "<= max_position"),
])
def test_dense_rules(sections, key, rule):
    raw = {**TINY_DENSE, **{k: {**TINY_DENSE.get(k, {}), **v} for k, v in sections.items()}}
    problems = _problems(raw)
    assert any(p.startswith(f"<config>: {key}: ") and rule in p for p in problems), problems


@pytest.mark.parametrize("moe, parallel, key, rule", [
    ({"num_experts": 6}, {"expert": 4}, "model.moe.num_experts=6", "divisible by parallel.expert (4)"),
    ({"router_topk": 9}, {}, "model.moe.router_topk=9", "must be <= num_experts (8)"),
    ({"ffn_hidden_size": 100}, {"tensor": 2, "expert_tensor": 3, "sequence_parallel": True},
     "model.moe.ffn_hidden_size=100", "divisible by parallel.expert_tensor (3)"),
    ({}, {"tensor": 2}, "parallel.sequence_parallel=False", "need sequence_parallel=true"),
    ({"shared_expert_gate": True}, {}, "model.moe.shared_expert_gate=True", "needs shared_expert_ffn_hidden_size"),
])
def test_moe_rules(moe, parallel, key, rule):
    raw = {**TINY_MOE, "model": {**TINY_MOE["model"], "moe": {**TINY_MOE["model"]["moe"], **moe}},
           "parallel": parallel}
    problems = _problems(raw)
    assert any(p.startswith(f"<config>: {key}: ") and rule in p for p in problems), problems


def test_all_problems_reported_together():
    problems = _problems("configs/demo-cpu.yaml", ["parallel.tensor=3", "parallel.pipeline=3"])
    keys = {p.split(": ")[1].split("=")[0] for p in problems}
    assert {"model.num_attention_heads", "model.num_query_groups", "model.num_layers"} <= keys


def test_vocab_is_padded_to_128_times_tp():
    cfg = make_config(TINY_DENSE, model={"vocab_size": 65000})
    assert cfg.model.padded_vocab_size(1) == 65024
    assert cfg.model.padded_vocab_size(2) == 65024 and cfg.model.padded_vocab_size(8) == 65536
    assert all(cfg.model.padded_vocab_size(tp) % (128 * tp) == 0 for tp in (1, 2, 4, 8))


def test_unknown_key_lists_known_keys():
    problems = _problems("configs/demo-cpu.yaml", ["model.hiden_size=64"])
    assert len(problems) == 1
    assert "model.hiden_size: unknown key (known keys:" in problems[0] and "hidden_size" in problems[0]


def test_wrong_type_and_missing_key():
    assert _problems("configs/demo-cpu.yaml", ["model.num_layers=four"])[0].startswith(
        "configs/demo-cpu.yaml: model.num_layers='four': ")
    raw = {k: v for k, v in TINY_DENSE.items() if k != "run"}
    assert _problems(raw) == ["<config>: run: required key is missing"]


def test_bad_override_syntax():
    assert _problems("configs/demo-cpu.yaml", ["model.num_layers"]) == [
        "override 'model.num_layers': expected dotted.key=value"]


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: x\n  dir: [unclosed\n")
    (problem,) = _problems(bad)
    assert problem.startswith(f"{bad}:") and "invalid YAML" in problem


@pytest.mark.parametrize(("text", "line", "key"), [
    ("run:\n  name: a\n  dir: runs/a\nmodel:\n  num_layers: 2\nrun:\n  name: b\n", 6, "run"),
    ("run:\n  name: a\n  name: b\n  dir: runs/a\n", 3, "name"),
    ("run: {name: a, dir: runs/a, name: b}\n", 1, "name"),
], ids=["section", "nested-key", "flow-mapping"])
def test_a_key_given_twice_names_the_second_line(tmp_path, text, line, key):
    config = tmp_path / "twice.yaml"
    config.write_text(text)
    (problem,) = _problems(config)
    assert problem.startswith(f"{config}:{line}: ") and f"key '{key}' given twice" in problem, problem


def test_a_key_given_twice_in_an_inherited_file_or_an_override(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  name: a\nrun:\n  dir: runs/a\n")
    (tmp_path / "top.yaml").write_text("inherit: base.yaml\n")
    (problem,) = _problems(tmp_path / "top.yaml")
    assert problem.startswith(f"{tmp_path / 'base.yaml'}:3: ")
    (problem,) = _problems("configs/demo-cpu.yaml", ["data.slurm.sbatch_args={account: a, account: b}"])
    assert problem.startswith("override 'data.slurm.sbatch_args=") and "key 'account' given twice" in problem


def test_yaml_merge_keys_still_override():
    from factory.config import load_yaml

    assert load_yaml("base: &b {x: 1, y: 2}\ntop:\n  <<: *b\n  x: 3\n")["top"] == {"x": 3, "y": 2}


def test_missing_file_and_inherit_cycle(tmp_path):
    assert _problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: config file not found"]
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    assert "forms a cycle" in _problems(tmp_path / "a.yaml")[0]


def test_fingerprint_tracks_content_not_order():
    a = validate_config({**TINY_DENSE})
    b = validate_config({k: TINY_DENSE[k] for k in reversed(list(TINY_DENSE))})
    c = make_config(TINY_DENSE, model={"num_layers": 4})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_run_dir_references_follow_the_override():
    cfg = load_config("configs/demo-cpu.yaml", ["run.dir=/elsewhere/run"])
    assert cfg.cpt.init_from == Path("/elsewhere/run/upcycle/checkpoints")
    assert [str(d.path) for d in cfg.sft.datasets][-1] == "/elsewhere/run/synth/sft.jsonl"
    with pytest.raises(ConfigError, match=r"sft.datasets\[0\].path='\$\{HOME\}/x': only \$\{run.dir\}"):
        load_config("configs/demo-cpu.yaml", ["sft.datasets=[{path: '${HOME}/x'}]"])
