"""The export and import verbs: config sections, manifests with the verification figure, atomic refusal."""

from __future__ import annotations

import json

import pytest
import torch

from factory.config import validate_config
from factory.errors import VerificationError
from factory.runner import run_stage
from factory.registry import STAGES
from tests.conftest import TINY_DENSE
from tests.convert.conftest import save_megatron, write_hf_model, write_tokenizer


def _config(tmp_path, **sections):
    return validate_config({"run": {"name": "tiny", "dir": str(tmp_path / "run")},
                            "runtime": {"device": "cpu", "precision": "fp32"}, **sections})


def test_import_then_export_stages_write_manifests(tmp_path):
    src = write_hf_model(tmp_path / "src", "mixtral")
    manifest = run_stage(STAGES["import"], _config(tmp_path, hf_import={"hf_dir": str(src)}))
    run = tmp_path / "run"
    assert manifest.metrics["max_abs_logit_diff"] <= 1e-4
    assert (run / "import" / "manifest.json").is_file()
    assert (run / "import" / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    assert (run / "import" / "tokenizer" / "tokenizer.json").is_file()

    cfg = _config(tmp_path, export={"checkpoint": str(run / "import" / "checkpoints"),
                                    "tokenizer_dir": str(run / "import" / "tokenizer")})
    manifest = run_stage(STAGES["export"], cfg)
    written = json.loads((run / "export" / "hf" / "manifest.json").read_text())
    assert written["metrics"]["architecture"] == "mixtral"
    assert written["metrics"]["max_abs_logit_diff"] <= 1e-4
    card = (run / "export" / "hf" / "README.md").read_text()
    assert "| import |" in card and "MixtralForCausalLM" in card and '"stage": "import"' in card
    assert f'"hf_dir": "{src}"' in card  # the checkpoint's metadata: what it was imported from


def test_refused_verification_leaves_nothing(tmp_path, monkeypatch):
    from factory.convert import export

    save_megatron(tmp_path / "ckpt", TINY_DENSE)
    tok = write_tokenizer(tmp_path / "tok")
    real = export.hf_logits
    monkeypatch.setattr(export, "hf_logits", lambda folder, tokens: real(folder, tokens) + 1e-3)
    cfg = _config(tmp_path, export={"checkpoint": str(tmp_path / "ckpt"), "tokenizer_dir": str(tok)})
    with pytest.raises(VerificationError, match="max \\|logit difference\\| 0.001 > tolerance 0.0001"):
        run_stage(STAGES["export"], cfg)
    assert not (tmp_path / "run" / "export" / "hf").exists()


def test_dry_run_needs_no_model(tmp_path, capsys):
    src = write_hf_model(tmp_path / "src", "llama")
    assert run_stage(STAGES["import"], _config(tmp_path, hf_import={"hf_dir": str(src)}), dry_run=True) is None
    out = capsys.readouterr().out
    assert "import/checkpoints" in out and "nothing is written" in out
    assert torch.distributed.is_initialized() is False
