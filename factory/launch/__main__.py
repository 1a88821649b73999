"""`python -m factory.launch {local,slurm} STAGE --config FILE [key=value ...] [--dry-run]`;
`python -m factory.launch slurm pipeline --config FILE [...] --submit` (the chain) and `status --config FILE`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from factory import registry
from factory.config import load_config
from factory.config_base import CoreConfig
from factory.errors import ConfigError, FactoryError, report
from factory.io import atomic_write_text
from factory.launch.chain import launch_pipeline
from factory.launch.commands import local_command
from factory.launch.slurm import array_task_problems, render
from factory.launch.status import show_status
from factory.slurm_queue import SlurmError


def launch_local(args: argparse.Namespace, cfg: CoreConfig) -> int:
    """Run the stage under torchrun on this machine (one process for the non-training verbs)."""
    nproc = args.nproc or (cfg.launch.processes_per_node if cfg.launch else 1)
    command = local_command(cfg, args.stage, args.config, args.overrides, nproc)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    sys.stdout.flush()
    os.execv(command[0], command)  # signals reach torchrun directly; it forwards them to the workers


SBATCH_FLAGS = {"partition": "-p", "account": "-A", "qos": "-q", "constraint": "-C", "reservation": None}
"""sbatch options `factory.launch slurm` takes on its command line; each sets the `launch.` key of its name."""


def sbatch_overrides(args: argparse.Namespace, cfg: CoreConfig) -> list[str]:
    """`launch.*` overrides for the sbatch options given on the command line (`--sbatch` appends)."""
    out = [f"launch.{key}={json.dumps(getattr(args, key))}" for key in SBATCH_FLAGS if getattr(args, key)]
    if args.sbatch:
        extra = [*(cfg.launch.extra_sbatch if cfg.launch else []), *args.sbatch]
        out.append(f"launch.extra_sbatch={json.dumps(extra)}")
    return out


def launch_slurm(args: argparse.Namespace, cfg: CoreConfig) -> int:
    """Render the sbatch script; print it (--dry-run), write it, and submit it (--submit)."""
    extra = sbatch_overrides(args, cfg)
    if extra:  # written into the script, so a resubmission or a requeue runs with the same options
        args.overrides = [*args.overrides, *extra]
        cfg = load_config(args.config, args.overrides)
    if args.stage == PIPELINE:
        return launch_pipeline(args, cfg)
    rendered = render(cfg, args.stage, args.config, args.overrides)
    if cfg.launch and cfg.launch.array:
        problems = array_task_problems(args.config, args.overrides, cfg.launch.array)
        if problems:
            raise ConfigError(problems)
    if args.dry_run:
        print(rendered.script, end="")
        print("\n# what runs where:")
        print("\n".join(f"#   {line}" for line in rendered.per_node))
        return 0
    path = Path(args.output or cfg.run.dir / "launch" / f"{args.stage}.sbatch")
    atomic_write_text(path, rendered.script)
    (cfg.launch and cfg.launch.output_dir or cfg.run.dir / "logs").mkdir(parents=True, exist_ok=True)
    print(f"wrote {path}")
    if not args.submit:
        print(f"submit with: sbatch {path}")
        return 0
    if shutil.which("sbatch") is None:
        raise SlurmError(f"sbatch not found on PATH; copy {path} to a Slurm login node and run sbatch there")
    done = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if done.returncode:
        raise SlurmError(f"sbatch {path} failed ({done.returncode}): {done.stderr.strip()}")
    print(done.stdout.strip())
    return 0


LAUNCHERS = {"local": launch_local, "slurm": launch_slurm, "status": show_status}
"""The launcher verbs; `slurm` also takes `pipeline` in place of a stage."""
PIPELINE = "pipeline"
"""`slurm pipeline`: every stage the pipeline would run, as a chain of jobs (factory/launch/chain.py)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m factory.launch", description="Start a factory stage.",
                                     epilog="docs/launch.md: local runs, Slurm, chains, signals, requeue, job arrays.")
    launchers = parser.add_subparsers(dest="launcher", required=True, metavar="LAUNCHER")
    for name, fn in (("local", launch_local), ("slurm", launch_slurm)):
        sub = launchers.add_parser(name, help=fn.__doc__, description=fn.__doc__)
        verbs = sub.add_subparsers(dest="stage", required=True, metavar="STAGE")
        for stage in registry.CHAIN:
            verb = _config_options(verbs.add_parser(stage.name, help=stage.help, description=stage.help))
            verb.add_argument("--dry-run", action="store_true", help="print what would run; run and write nothing")
            if name == "local":
                verb.add_argument("--nproc", type=int, help="processes (default: launch.gpus_per_node, else 1)")
            else:
                verb.add_argument("--output", help="script path (default: <run.dir>/launch/<stage>.sbatch)")
                _slurm_options(verb, "submit the script with sbatch")
        if name == "slurm":
            doc = launch_pipeline.__doc__
            _chain_options(verbs.add_parser(PIPELINE, help=doc, description=doc))
    status = _config_options(launchers.add_parser("status", help=show_status.__doc__, description=show_status.__doc__))
    status.add_argument("--job-ended", metavar="STAGE", help="what a chain's job runs after its stage: exit 0 when "
                        "the stage is done, else cancel the jobs that wait for it and exit 1")
    return parser


def _config_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def _slurm_options(parser: argparse.ArgumentParser, submit: str) -> None:
    parser.add_argument("--submit", action="store_true", help=submit)
    for key, short in SBATCH_FLAGS.items():
        flags = [f"--{key}", *([short] if short else [])]
        parser.add_argument(*flags, metavar=key.upper(), help=f"#SBATCH --{key} (sets launch.{key})")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="one more #SBATCH option, given as --sbatch=--mem=0 (repeatable; appended to "
                             "launch.extra_sbatch)")


def _chain_options(parser: argparse.ArgumentParser) -> None:
    _config_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the decisions, the job graph with resources "
                        "and each training stage's plan (GPU-hours); submit nothing")
    _slurm_options(parser, "submit the jobs, chained by their dependencies")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", metavar="STAGE", help="STAGE and every later stage, no skipping")
    which.add_argument("--only", metavar="STAGE", help="STAGE alone, no skipping")
    parser.add_argument("--fresh", action="append", default=[], metavar="STAGE",
                        help="let a resumable stage whose result keys or inputs changed start over: its earlier "
                             "output is moved aside to <folder>.prev-<UTC time> on submission (repeatable)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return LAUNCHERS[args.launcher](args, load_config(args.config, args.overrides))
    except FactoryError as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(main())
