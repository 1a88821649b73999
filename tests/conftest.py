"""Shared fixtures: tiny configs, a single-process Megatron runtime, the full eval data folder and a real Slurm."""

from __future__ import annotations

import copy
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from factory.config import FactoryConfig, validate_config
from factory.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MIRROR_ENV = "FACTORY_EVAL_DATA_MIRROR"


def mirror_beside_checkout() -> Path | None:
    """An offline eval-data mirror in a folder beside the checkout (`../<any>/eval-data` holding jglue/), as the
    project's build machines keep one. Only the `full_eval_data` fixture looks, and only to install from it with
    the project's own `fetch --from`, which checks every file against the pinned checksums."""
    found = sorted(p for p in ROOT.parent.glob("*/eval-data") if (p / "jglue").is_dir())
    return found[0] if found else None

TINY_DENSE = {
    "run": {"name": "test", "dir": "runs/test"},
    "runtime": {"device": "cpu", "precision": "fp32", "seed": 1234},
    "model": {
        "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
        "num_query_groups": 2, "seq_length": 32, "vocab_size": 250,
    },
}
TINY_MOE = copy.deepcopy(TINY_DENSE)
TINY_MOE["model"]["moe"] = {"num_experts": 8, "router_topk": 2, "token_dispatcher": "allgather"}


def pytest_collection_modifyitems(items) -> None:
    """The modules with slow tests first, each in its own order. Under pytest-xdist (scripts/test.sh:
    `-n 2 --dist loadscope --no-loadscope-reorder`) a module is one unit of work, run by one worker (its module
    fixtures built once, its `.cache/` installs made by one process), and the units are handed out in this
    order: the long ones start early and the short ones fill in around them."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """Each test ends with this process's stop-signal handlers as it found them. A stage run in-process that was
    asked to stop leaves SIGTERM and SIGUSR1 ignored (factory/train/stop.py: right for a process on its way out);
    a later test's forked workers (the data stage's pool) would inherit that, and their pool could not end them."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    yield
    for s, handler in before.items():
        if signal.getsignal(s) is not handler:
            signal.signal(s, handler)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`<basetemp>/<name>`, filled by `build(folder)` the first time this test run (this xdist worker) asks.

    For session fixtures that test modules outside their conftest's folder import: the import is a second
    definition of the fixture, which pytest sets up again; the folder is what they share. A build that failed
    is started over by the next one to ask, which then sees the error itself."""
    folder, done = tmp_path_factory.getbasetemp() / name, tmp_path_factory.getbasetemp() / f"{name}.built"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        build(folder)
        done.touch()
    return folder


def make_config(base: dict, **sections) -> FactoryConfig:
    """A validated config from `base` with sections deep-updated by `sections`."""
    raw = copy.deepcopy(base)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return validate_config(raw)


@pytest.fixture
def runtime():
    """A world-of-one CPU runtime, torn down after the test."""
    from factory.runtime.runtime import runtime_session

    cfg = make_config(TINY_DENSE)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        yield rt


@pytest.fixture(scope="session")
def full_eval_data(tmp_path_factory) -> Path:
    """The full eval data folder, found as the eval stage finds it (FACTORY_EVAL_DATA, else the fetched cache);
    failing that, installed into a temporary folder by `fetch --from` out of $FACTORY_EVAL_DATA_MIRROR or the
    build machines' mirror; failing that, the test is skipped with the reason."""
    from factory.evaldata.install import Mirror, fetch
    from factory.evaldata.location import resolve

    try:
        return resolve(None)
    except ConfigError as e:
        missing = str(e)
    mirror = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else mirror_beside_checkout()
    if mirror is None or not mirror.is_dir():
        pytest.skip(f"{missing}; no mirror beside the checkout either (set {MIRROR_ENV})")
    return fetch(tmp_path_factory.mktemp("eval-data"), Mirror(mirror)).folder


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node Slurm (slurmctld + slurmd + munge, tests/launch/slurm_cluster.py) for the session, brought
    up only by tests that ask: installs Debian's packages when missing, starts the daemons, and stops them (by
    PID) at the end. Under pytest-xdist, each worker that runs a test asking for one starts its own (their ports
    and job ids apart)."""
    from tests.launch.slurm_cluster import LocalSlurm, SlurmUnavailable, install

    try:
        install()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm to test on: {e}")
    root = tmp_path_factory.mktemp("slurm")
    cluster = LocalSlurm(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
