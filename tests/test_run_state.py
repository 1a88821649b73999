"""pipeline.json: a new run starts empty, saves atomically with a timestamp and its folder, a damaged file or
one of another shape is one line."""

import pytest

from factory.errors import ConfigError
from factory.run_state import STATE_NAME, load_state, save_state


def test_round_trip_and_damaged_file(tmp_path):
    assert load_state(tmp_path) == {"stages": {}}
    save_state(tmp_path, {"stages": {"data": {"status": "done"}}})
    state = load_state(tmp_path)
    assert state["stages"] == {"data": {"status": "done"}} and state["updated_at"].endswith("+00:00")
    assert state["run_dir"] == str(tmp_path.resolve())
    (tmp_path / STATE_NAME).write_text('{"stages": ', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pipeline.json: not valid JSON .*; move it aside to re-run every stage"):
        load_state(tmp_path)


@pytest.mark.parametrize("text", ["[]", '"done"', '{"stages": []}', '{"stages": {"data": "done"}}', "{}"])
def test_a_record_of_another_shape_is_one_line(tmp_path, text):
    (tmp_path / STATE_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_state(tmp_path)
    assert info.value.lines() == [f"{tmp_path / STATE_NAME}: expected {{\"stages\": {{stage: record}}}}, found "
                                  f"{text}; move it aside to re-run every stage (no output "
                                  "is deleted)"]
