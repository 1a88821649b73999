"""The stage registry: a new stage is one module plus one registry entry, and it appears everywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factory.errors import ConfigError
from factory.registry import CHAIN, STAGES, chain_problems, stage

ROOT = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent('''
    """The `toy` stage: counts the characters of a text file (a stage written to test the registry)."""

    from __future__ import annotations

    from pathlib import Path

    from factory.config_base import CoreConfig
    from factory.manifest import RunManifest
    from factory.outputs import Outputs
    from factory.schema import Section
    from factory.stage_api import Plan, SectionSpec, Stage


    class ToyConfig(Section):
        """Counts characters."""

        text: Path
        """The file to count."""


    def plan(cfg: CoreConfig) -> Plan:
        return Plan(output_dir=outputs(cfg).dir, reads=[STAGE.section_of(cfg).text],
                    notes=["toy plan note"])


    def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
        manifest.record(chars=len(STAGE.section_of(cfg).text.read_text()))


    def outputs(cfg: CoreConfig) -> Outputs:
        return Outputs(cfg.stage_dir("toy"))


    STAGE = Stage(name="toy", help="count characters (toy)",
                  sections=(SectionSpec("toy", ToyConfig, "The toy stage's input."),),
                  plan=plan, run=run, outputs=outputs, result_sections=("toy",), after=("data",), job_array=True)
''')


@pytest.fixture(scope="module")
def toy_tree(tmp_path_factory) -> Path:
    """A copy of the project with one new stage module and one registry entry, nothing else touched."""
    tree = tmp_path_factory.mktemp("toy") / "project"
    for name in ("factory", "tokenizer", "configs"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "factory" / "toy_stage.py").write_text(TOY, encoding="utf-8")
    registry = tree / "factory" / "registry.py"
    text = registry.read_text(encoding="utf-8")
    text = text.replace("from factory.errors import ConfigError\n",
                        "from factory.errors import ConfigError\nfrom factory.toy_stage import STAGE as TOY\n")
    text = text.replace("(TOKENIZER, DATA, PACK,", "(TOKENIZER, DATA, TOY, PACK,")
    registry.write_text(text, encoding="utf-8")
    (tree / "words.txt").write_text("abc\n", encoding="utf-8")
    (tree / "toy.yaml").write_text(f"inherit: configs/demo-cpu.yaml\nrun: {{name: toy, dir: {tree / 'run'}}}\n"
                                   f"toy: {{text: {tree / 'words.txt'}}}\n", encoding="utf-8")
    return tree


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_the_chain_is_valid_and_lookups_name_the_stages():
    assert chain_problems(CHAIN) == []
    assert stage("import") is STAGES["import"] and STAGES["import"].section == "hf_import"
    with pytest.raises(ConfigError, match=r"unknown stage 'nope' \(stages: tokenizer, data, "):
        stage("nope")


def test_chain_problems_name_what_is_wrong():
    pretrain, data = STAGES["pretrain"], STAGES["data"]
    assert chain_problems((pretrain,)) == ["stage 'pretrain' reads from 'tokenizer', which is not an earlier stage",
                                           "stage 'pretrain' reads from 'pack', which is not an earlier stage"]
    assert chain_problems((data, data)) == ["stage 'data' is registered twice",
                                            "stage 'data': section 'data' is owned by an earlier stage"]


def test_a_new_stage_shows_up_in_the_cli_the_pipeline_the_config_and_the_launcher(toy_tree):
    helped = _run(toy_tree, "factory.stage", "--help")
    assert helped.returncode == 0 and "count characters (toy)" in helped.stdout, helped.stderr
    dry = _run(toy_tree, "factory.stage", "toy", "--config", "toy.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "# note:   toy plan note" in dry.stdout and "toy:\n  text:" in dry.stdout
    order = _run(toy_tree, "factory.pipeline", "toy.yaml", "--dry-run")
    assert order.returncode == 0, order.stderr
    stages = [line.split()[0] for line in order.stdout.splitlines() if line.strip()]
    assert stages[:3] == ["tokenizer", "data", "toy"]
    unknown = _run(toy_tree, "factory.stage", "toy", "--config", "toy.yaml", "toy.colour=red", "--dry-run")
    assert unknown.returncode == 2 and "toy.colour: unknown key (known keys: text)" in unknown.stderr
    sbatch = _run(toy_tree, "factory.launch", "slurm", "toy", "--config", "toy.yaml", "--dry-run")
    assert sbatch.returncode == 0 and "-m factory.stage toy --config toy.yaml" in sbatch.stdout, sbatch.stderr
    ran = _run(toy_tree, "factory.stage", "toy", "--config", "toy.yaml")
    assert ran.returncode == 0, ran.stderr
    assert '"chars": 4' in (toy_tree / "run" / "toy" / "manifest.json").read_text()


TOY_ARCHITECTURE = textwrap.dedent('''
    """A toy HF architecture (Llama's mapping under another name), written to test the architecture registry."""

    from factory.convert.architectures.llama import Llama


    class ToyLlama(Llama):
        name = "toy_llama"
''')


def test_a_new_hf_architecture_is_its_file_plus_one_registry_line(tmp_path):
    tree = tmp_path / "project"
    for name in ("factory", "tokenizer", "configs"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    folder = tree / "factory" / "convert" / "architectures"
    (folder / "toy.py").write_text(TOY_ARCHITECTURE, encoding="utf-8")
    registry = folder / "__init__.py"
    text = registry.read_text(encoding="utf-8")
    text = text.replace("from factory.errors import ConfigError\n",
                        "from factory.convert.architectures.toy import ToyLlama\nfrom factory.errors import ConfigError\n")
    registry.write_text(text.replace("Qwen2Moe())}", "Qwen2Moe(), ToyLlama())}"), encoding="utf-8")
    check = ("import sys\nfrom factory.config import load_config\nfrom factory.errors import ConfigError\n"
             "try:\n    load_config('configs/demo-cpu.yaml', ['run.dir=/tmp/x', 'export.architecture=' + sys.argv[1]])\n"
             "    print('valid')\nexcept ConfigError as e:\n    print(e)\n")

    def validate(name: str) -> str:
        done = subprocess.run([sys.executable, "-c", check, name], cwd=tree, capture_output=True, text=True,
                              timeout=300, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert validate("toy_llama") == "valid"
    assert validate("nope").endswith(
        "export.architecture='nope': not supported (supported: llama, mixtral, qwen3_moe, qwen2_moe, toy_llama)")
