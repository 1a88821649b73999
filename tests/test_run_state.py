"""pipeline.json: a new run starts empty, saves atomically with a timestamp and its folder, a damaged file or
one of another shape is one line, writers recording stages at once keep each other's records."""

import multiprocessing

import pytest

from factory.errors import ConfigError
from factory.run_state import STATE_NAME, load_state, record_stage, save_state


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


def _record_many(run_dir, stage: str, times: int) -> None:
    for i in range(times):
        record_stage(run_dir, stage, {"status": "running", "count": i + 1})


def test_writers_recording_different_stages_at_once_lose_none_of_them(tmp_path):
    """Two processes each rewrite their own stage's record 40 times (the jobs of a chain finishing together):
    every read-modify-write holds the records lock, so neither overwrites the other's last record."""
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_record_many, args=(tmp_path, stage, 40)) for stage in ("tokenizer", "data")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert load_state(tmp_path)["stages"] == {"tokenizer": {"status": "running", "count": 40},
                                              "data": {"status": "running", "count": 40}}
