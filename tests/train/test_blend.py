"""blend.json as training reads it: every value Megatron's blend would refuse (or silently misuse) is one line
naming the file, the phase and the value."""

from __future__ import annotations

import json

import pytest

from factory.errors import DataError
from factory.train.blend import blend_phases

PHASE = {"name": "main", "prefixes": ["/data/ja_text_document", "/data/en_text_document"], "weights": [0.75, 0.25]}


def _write(path, text_or_obj) -> None:
    path.write_text(text_or_obj if isinstance(text_or_obj, str) else json.dumps(text_or_obj))


def test_a_resolved_blend_reads_back(tmp_path):
    _write(tmp_path / "blend.json", {"phases": [PHASE, {**PHASE, "name": "anneal", "weights": [1, 3]}]})
    phases = blend_phases(tmp_path / "blend.json")
    assert [(p.name, p.weights) for p in phases] == [("main", [0.75, 0.25]), ("anneal", [1.0, 3.0])]


@pytest.mark.parametrize(("blend", "words"), [
    ({"phases": [{**PHASE, "weights": [-0.5, 1.5]}]}, "phase 'main': weight -0.5 for /data/ja_text_document "
                                                      "(expected a finite number above 0)"),
    ({"phases": [{**PHASE, "weights": [0, 0]}]}, "phase 'main': weight 0 for /data/ja_text_document"),
    ('{"phases": [{"name": "main", "prefixes": ["/d/a"], "weights": [NaN]}]}', ": not a blend file (NaN is not a JSON number)"),
    ('{"phases": [{"name": "main", "prefixes": ["/d/a"], "weights": [1e999]}]}', "weight inf for /d/a"),
    ({"phases": [{**PHASE, "weights": ["0.75", 0.25]}]}, "phase 'main': weight '0.75' for"),
    ({"phases": [{**PHASE, "weights": [1.0]}]}, "phase 'main': 'weights' must be a list of 2 numbers"),
    ({"phases": [PHASE, PHASE]}, "phase 'main' given twice"),
    ({"phases": []}, "expected a non-empty 'phases' list"),
    ({"phases": [{**PHASE, "prefixes": "/data/ja_text_document"}]}, "'prefixes' must be a non-empty list"),
    ('{"phases": [], "phases": [{"name": "x"}]}', "key 'phases' given twice"),
    ("[1, 2]", "expected a JSON object at the top level, got list"),
], ids=["negative", "zero-sum", "nan", "infinity", "string", "lengths", "phase-twice", "no-phases", "prefix-string",
        "key-twice", "not-an-object"])
def test_a_bad_value_names_the_file_the_phase_and_the_value(tmp_path, blend, words):
    path = tmp_path / "blend.json"
    _write(path, blend)
    with pytest.raises(DataError) as info:
        blend_phases(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)
    assert len(info.value.lines()) == 1
