"""Where the eval data folder is: a path given by the user (`eval.data_dir`, `--dir`), else FACTORY_EVAL_DATA,
else the user cache that `python -m factory.evaldata fetch` fills."""

from __future__ import annotations

import os
from pathlib import Path

from factory.errors import ConfigError

ENV_DIR = "FACTORY_EVAL_DATA"
"""Environment variable naming the eval data folder (after eval.data_dir / --dir, before the cache)."""
ENV_BASE_URL = "FACTORY_EVAL_DATA_URL"
"""Environment variable replacing https://raw.githubusercontent.com as the download root (a proxy, a test)."""
MARKER = "evaldata.json"
"""Written last by fetch: the folder is complete (what it was installed from, which optional files are absent)."""
FETCH_COMMAND = "python -m factory.evaldata fetch"


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/jp-model-factory/eval-data (XDG_CACHE_HOME defaults to ~/.cache)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative
    return root / "jp-model-factory" / "eval-data"


def default_dir() -> Path:
    """FACTORY_EVAL_DATA when set, else the cache: where fetch installs without --dir."""
    return Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else cache_dir()


def resolve(data_dir: Path | None, key: str = "eval.data_dir") -> Path:
    """The eval data folder: `data_dir`, else FACTORY_EVAL_DATA, else the cache once a fetch completed it. The
    first one set is the answer; when that folder is missing, one ConfigError line names all three."""
    env, cache = os.environ.get(ENV_DIR), cache_dir()
    if data_dir is not None:
        folder, states = data_dir, [f"{key}={data_dir} (no such folder)", f"{ENV_DIR} (not read)",
                                    f"cache {cache} (not read)"]
    elif env:
        folder, states = Path(env), [f"{key} unset", f"{ENV_DIR}={env} (no such folder)", f"cache {cache} (not read)"]
    else:
        state = "incomplete: its fetch was interrupted" if cache.is_dir() else "not fetched"
        folder, states = cache, [f"{key} unset", f"{ENV_DIR} unset", f"cache {cache} ({state})"]
    named = data_dir is not None or bool(env)  # a folder the user names is taken as it is; the cache counts
    if not (folder.is_dir() if named else (cache / MARKER).is_file()):  # only once a fetch has completed it
        raise ConfigError(f"eval data folder not found: {', '.join(states)}; run `{FETCH_COMMAND}` (offline: "
                          f"`{FETCH_COMMAND} --from MIRROR`) or point {key} or {ENV_DIR} at a copy")
    return folder
