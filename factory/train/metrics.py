"""Training metrics out: log lines, metrics.jsonl, TensorBoard and (optionally) W&B; rank 0 only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from factory.errors import ConfigError
from factory.io import atomic_write_text
from factory.records import read_jsonl

log = logging.getLogger("factory.train")


class MetricsWriter:
    """Writes one record per logged iteration; `truncate_after` drops records a resume replays."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, wandb_project: str | None,
                 run_name: str, config: dict[str, Any]):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ConfigError(f"wandb_project={wandb_project}: the wandb package is not installed "
                                  "(pip install wandb)") from None
            self.wandb = wandb.init(project=wandb_project, name=run_name, config=config, resume="allow")

    def truncate_after(self, iteration: int) -> None:
        """Forget records past `iteration` (they are recomputed after a resume)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path) if r.get("iteration", 0) <= iteration]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["iteration"]
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "iteration"}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key.replace(" ", "_"), value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def format_line(r: dict[str, Any], train_iters: int) -> str:
    """One human log line from a metrics record."""
    parts = [f"iter {r['iteration']}/{train_iters}", f"loss {r['loss']:.4f}", f"lr {r['lr']:.3e}",
             f"grad {r['grad_norm']:.3f}", f"{r['tokens_per_s']:,.0f} tok/s", f"{r['tflops']:.2f} TFLOP/s"]
    if r.get("mfu") is not None:
        parts.append(f"MFU {100 * r['mfu']:.1f}%")
    if "z_loss" in r:
        parts.append(f"z {r['z_loss']:.3f}")
    if "moe_max_imbalance" in r:
        parts.append(f"expert load max/mean {r['moe_max_imbalance']:.2f}")
    if "valid_loss" in r:
        parts.append(f"valid {r['valid_loss']:.4f}")
    return " | ".join(parts)
