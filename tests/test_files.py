import json
import math

import pytest

from phisnet.files import json_text, write_text_atomic


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_text_writes_a_missing_metric_as_null():
    report = {"H": 80.6, "forces": math.nan, "rows": [1.0, math.inf, {"x": -math.inf}]}
    with pytest.raises(ValueError):
        _strict(json.dumps(report))  # what Python's json would write
    assert _strict(json_text(report, indent=2)) == {"H": 80.6, "forces": None, "rows": [1.0, None, {"x": None}]}


def test_an_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "deep" / "report.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, json_text({"a": 1}))
    assert _strict(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left
