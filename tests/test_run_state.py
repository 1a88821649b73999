"""pipeline.json: a new run starts empty, saves atomically with a timestamp, a damaged file is one line."""

import pytest

from factory.errors import ConfigError
from factory.run_state import STATE_NAME, load_state, save_state


def test_round_trip_and_damaged_file(tmp_path):
    assert load_state(tmp_path) == {"stages": {}}
    save_state(tmp_path, {"stages": {"data": {"status": "done"}}})
    state = load_state(tmp_path)
    assert state["stages"] == {"data": {"status": "done"}} and state["updated_at"].endswith("+00:00")
    (tmp_path / STATE_NAME).write_text('{"stages": ', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pipeline.json: not valid JSON .*; delete it to re-run every stage"):
        load_state(tmp_path)
