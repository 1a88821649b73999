"""The folder steps of a checkpoint root: publish (also over an existing iteration), retention, the committed
iteration when the tracker is off, and recovery from every state a killed save can leave."""

from __future__ import annotations

import logging

import pytest

from factory.errors import CheckpointError
from factory.train import checkpoint_root as root_steps
from factory.train.checkpoint_root import TRACKER, iteration_dir, latest_iteration, partial_dir


def _iteration(folder, text: str):
    folder.mkdir(parents=True)
    (folder / "data").write_text(text)
    return folder


def _listing(root) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _commit(root, iteration: int, text: str) -> None:
    _iteration(partial_dir(root, iteration), text)
    root_steps.publish(root, iteration)


def test_publish_replaces_an_existing_iteration_only_once_the_new_copy_is_in(tmp_path):
    _commit(tmp_path, 2, "first")
    assert _listing(tmp_path) == ["iter_0000002", TRACKER] and latest_iteration(tmp_path) == 2
    _commit(tmp_path, 2, "second")
    assert _listing(tmp_path) == ["iter_0000002", TRACKER]
    assert (iteration_dir(tmp_path, 2) / "data").read_text() == "second"


def test_prune_keeps_the_last_and_the_multiples_and_skips_folders_above_the_current(tmp_path):
    for it in (1, 2, 3, 4, 6):
        _commit(tmp_path, it, str(it))
    root_steps.prune(tmp_path, 4, keep_last=2, keep_every=2)
    # 1 goes; 2 is a multiple of keep_every; 3 and 4 are the last two up to 4; 6 lies above the current one
    assert root_steps.saved_iterations(tmp_path) == [2, 3, 4, 6]
    root_steps.prune(tmp_path, 4, keep_last=None, keep_every=None)
    assert root_steps.saved_iterations(tmp_path) == [2, 3, 4, 6]


@pytest.mark.parametrize(("left", "expected", "kept"), [
    # killed after the partial's files: the save is redone from the committed iteration
    ({".iter_0000004.partial": "new", "iter_0000002": "old"}, ["iter_0000002"], None),
    # killed after the old copy of 4 moved aside: it moves back, the partial goes
    ({".iter_0000004.partial": "new", ".iter_0000004.old": "old", "iter_0000002": "2"},
     ["iter_0000002", "iter_0000004"], "old"),
    # killed after the new copy moved in (or after the tracker): the old copy goes
    ({"iter_0000004": "new", ".iter_0000004.old": "old", "iter_0000002": "2"}, ["iter_0000002", "iter_0000004"], "new"),
    # killed inside retention
    ({".iter_0000002.pruned": "2", "iter_0000004": "4"}, ["iter_0000004"], "4"),
], ids=["partial", "old-aside", "new-in", "pruned"])
def test_recover_turns_each_interrupted_state_into_plain_iterations(tmp_path, left, expected, kept):
    for name, text in left.items():
        _iteration(tmp_path / name, text)
    (tmp_path / TRACKER).write_text("4\n")
    root_steps.recover(tmp_path)
    assert _listing(tmp_path) == [*expected, TRACKER]
    if kept is not None:
        assert (iteration_dir(tmp_path, 4) / "data").read_text() == kept


@pytest.mark.parametrize(("tracker", "why"), [
    ("6\n", "names iteration 6, but"), ("garbage", "holds 'garbage', not an iteration number"), (None, "is missing")])
def test_a_tracker_naming_no_folder_falls_back_to_the_newest_one_with_a_warning(tmp_path, caplog, tracker, why):
    for it in (2, 4):
        _iteration(iteration_dir(tmp_path, it), str(it))
    _iteration(iteration_dir(tmp_path, 8), "beyond the tracker")
    if tracker is not None:
        (tmp_path / TRACKER).write_text(tracker)
    with caplog.at_level(logging.WARNING):
        found = latest_iteration(tmp_path)
    assert found == (4 if tracker == "6\n" else 8)
    assert f"{tmp_path / TRACKER} {why}" in caplog.text and f"using iteration {found}" in caplog.text


def test_an_empty_root_has_no_latest_iteration_but_a_lone_tracker_is_refused(tmp_path, caplog):
    assert latest_iteration(tmp_path) is None and latest_iteration(tmp_path / "absent") is None
    assert caplog.text == ""
    (tmp_path / TRACKER).write_text("4\n")
    _iteration(iteration_dir(tmp_path, 6), "above the tracker")
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / TRACKER} names iteration 4, but .* is missing, and no "
                                              "iteration folder below it is left$"):
        latest_iteration(tmp_path)
