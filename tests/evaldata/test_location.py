"""Where the eval stage finds its data: eval.data_dir, else FACTORY_EVAL_DATA, else a completed cache; a
missing folder is one line naming all three and the fetch command."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.errors import ConfigError
from factory.evaldata.location import MARKER, cache_dir, resolve

FETCH = ("run `python -m factory.evaldata fetch` (offline: `python -m factory.evaldata fetch --from MIRROR`) or "
         "point eval.data_dir or FACTORY_EVAL_DATA at a copy")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("FACTORY_EVAL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "jp-model-factory" / "eval-data"


def test_the_first_one_set_is_the_folder(cache, tmp_path, monkeypatch):
    given, env = tmp_path / "given", tmp_path / "env"
    given.mkdir(), env.mkdir()
    (cache / MARKER).parent.mkdir(parents=True)
    (cache / MARKER).write_text("{}")
    assert resolve(None) == cache
    monkeypatch.setenv("FACTORY_EVAL_DATA", str(env))
    assert resolve(None) == env and resolve(given) == given


def test_a_missing_folder_is_one_line_naming_all_three(cache, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as info:
        resolve(None)
    cache.mkdir(parents=True)  # a fetch that broke off: files but no marker
    with pytest.raises(ConfigError) as interrupted:
        resolve(None)
    monkeypatch.setenv("FACTORY_EVAL_DATA", str(tmp_path / "env"))
    with pytest.raises(ConfigError) as env:
        resolve(None)
    with pytest.raises(ConfigError) as given:
        resolve(tmp_path / "given")
    assert [str(e.value) for e in (info, interrupted, env, given)] == [
        f"eval data folder not found: eval.data_dir unset, FACTORY_EVAL_DATA unset, cache {cache} (not fetched); "
        f"{FETCH}",
        f"eval data folder not found: eval.data_dir unset, FACTORY_EVAL_DATA unset, cache {cache} (incomplete: its "
        f"fetch was interrupted); {FETCH}",
        f"eval data folder not found: eval.data_dir unset, FACTORY_EVAL_DATA={tmp_path / 'env'} (no such folder), "
        f"cache {cache} (not read); {FETCH}",
        f"eval data folder not found: eval.data_dir={tmp_path / 'given'} (no such folder), FACTORY_EVAL_DATA (not "
        f"read), cache {cache} (not read); {FETCH}"]


def test_the_cache_follows_xdg_and_ignores_a_relative_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_dir() == Path.home() / ".cache" / "jp-model-factory" / "eval-data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "jp-model-factory" / "eval-data"
