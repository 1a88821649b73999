"""Logging setup: rich console on rank 0, quiet other ranks, known third-party noise filtered."""

from __future__ import annotations

import logging
import os
import sys
import warnings

_NOISE = (
    r".*Transformer Engine and Apex are not installed.*",
    r".*Apex is not installed.*",
    r".*full scope is deprecated.*",
)


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; ranks other than 0 log warnings and errors only."""
    from rich.logging import RichHandler

    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    rank = int(os.environ.get("RANK", 0))
    from rich.console import Console

    # Logs piped to files (Slurm, CI) keep one record per line instead of wrapping at 80 columns.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s" if rank else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if rank == 0 else "WARNING")
    # megatron-core logs import-time backend notices at INFO and a GPTModel deprecation notice per model.
    logging.getLogger("megatron").setLevel("WARNING")
    logging.getLogger("megatron.core.models.gpt.gpt_model").setLevel("ERROR")
    # ... and a notice on every synchronous checkpoint save that its own async path is deprecated.
    logging.getLogger("megatron.core.dist_checkpointing.strategies.torch").setLevel("ERROR")
    # Its writer logs each failed write twice; checkpoint.save reports the failure as one line naming the folder.
    logging.getLogger("megatron.core.dist_checkpointing.strategies.filesystem_async").setLevel("CRITICAL")
