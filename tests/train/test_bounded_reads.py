"""A 200 GB file in an older iteration folder is never read: fingerprinting, export, upcycle and cpt start-up
read the newest iteration only (bytes read measured by the kernel's per-process counter)."""

from __future__ import annotations

from factory.identity import identity
from factory.registry import STAGES
from factory.runner import run_stage
from factory.runtime.config import RuntimeConfig
from tests.train.conftest import train_config
from tests.upcycle.conftest import upcycle_config

LIMIT = 1 << 30  # far above what the tiny checkpoints hold, far below the 200 GB file


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_an_old_200_gb_iteration_does_not_slow_fingerprints_export_upcycle_or_cpt(packed_data, tmp_path):
    from factory.convert.export import export_checkpoint

    cfg = train_config(packed_data, tmp_path, train_iters=4, model={"vocab_size": 512},
                       checkpoint={"save_interval": 2, "keep_last": 5})
    run_stage(STAGES["pretrain"], cfg)
    root = tmp_path / "pretrain" / "checkpoints"
    with open(root / "iter_0000002" / "__0_9.distcp", "wb") as f:
        f.truncate(200 << 30)
    steps = {
        "fingerprint": lambda: identity(root),
        "export": lambda: export_checkpoint(root, tmp_path / "hf",
                                            runtime_cfg=RuntimeConfig(device="cpu", precision="fp32"),
                                            tokenizer_dir=None),
        "upcycle": lambda: run_stage(STAGES["upcycle"], upcycle_config(tmp_path / "up", root, model={"vocab_size": 512})),
        "cpt": lambda: run_stage(STAGES["cpt"], train_config(packed_data, tmp_path / "cpt", stage="cpt", train_iters=2,
                                                             init_from=str(root))),
    }
    for name, step in steps.items():
        before = _bytes_read()
        step()
        assert _bytes_read() - before < LIMIT, name
