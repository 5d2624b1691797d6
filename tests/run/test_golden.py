"""Golden run: the tiny run (``tiny-char`` and the saved SAE of ``tests/fixtures``) gives the
recorded results, value by value.

``golden_tiny.json`` holds the content of every result file of the run (``tests.run.golden``):
strings and integers must be equal, floats within ``golden.RTOL`` / ``golden.ATOL``, so the test
passes on any CPU (CI runs it natively and again with AVX2 settings; see ``tests.run.golden``). A
change that alters results on purpose re-records it (``python -m tests.run.test_golden``) and says
why in its commit.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from saeinverse.cli import main
from tests.builders import tiny_run_args
from tests.run.golden import RTOL, compare, compare_runs, dumps, run_content

GOLDEN = Path(__file__).with_name("golden_tiny.json")
GOLDEN_RUN = tiny_run_args(
    clustering={"umap": {"n_components": 0}, "selection": {"rule": "per_cluster"}}
)
"""The tiny run, with nothing discrete read off a UMAP layout (``tests.run.golden``: Across
CPUs): clusters found among the features' own vectors, selection by rule 'per_cluster'."""
SHOWN = 40
"""Differences listed in a failure message (the count says how many there are in all)."""


def _run(root: Path) -> Path:
    """The tiny run in ``root/run`` (the caller points SAEINVERSE_CACHE at a private cache)."""
    assert main(["run", "--run-dir", str(root / "run"), *GOLDEN_RUN]) == 0
    return root / "run"


def test_tiny_run_results_equal_the_recorded_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEINVERSE_CACHE", str(tmp_path / "cache"))
    differences = compare_runs(json.loads(GOLDEN.read_text()), _run(tmp_path))
    shown = "\n".join(differences[:SHOWN])
    assert not differences, f"{len(differences)} results differ from the golden run:\n{shown}"


def test_compare_names_every_difference_by_its_path():
    expected = {"a": [1, 0.5, "x"], "b": {"c": 2.0}, "gone": None}
    actual = {"a": [2, 0.5 * (1 + RTOL / 2), "y"], "b": {"c": 2.0 * (1 + 2 * RTOL)}, "new": 1}
    assert compare(expected, actual) == [
        "a[0]: 2 != 1 expected",
        "a[2]: 'y' != 'x' expected",
        f"b.c: {actual['b']['c']!r} != 2.0 expected",
        "gone: missing",
        "new: not in the expected values",
    ]
    assert compare([1, 2], [1, 2, 3]) == ["<root>: 3 items != 2 expected"]
    assert compare(float("nan"), float("nan")) == [] and compare(True, 1) != []


def test_compare_reads_rounded_values_and_the_map_leniently():
    assert compare(0.7648, 0.7649) == []  # round(x, 4) at a boundary
    assert compare(0.5, 0.6) != [] and compare(0.7648, 0.765) != []
    layout = {
        "embedding_2d": {"dtype": "float32", "shape": [2, 2], "values": [[0.1, 2.0], [3.0, 4.0]]}
    }
    moved = {
        "embedding_2d": {"dtype": "float32", "shape": [2, 2], "values": [[9.0, 8.0], [7.0, 6.0]]}
    }
    assert compare(layout, moved) == []
    moved["embedding_2d"]["shape"] = [1, 2]
    assert compare(layout, moved) == ["embedding_2d.shape[0]: 1 != 2 expected"]


if __name__ == "__main__":  # re-record, on one thread as the tests run (tests/conftest.py)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAEINVERSE_CACHE"] = str(Path(tmp) / "cache")
        GOLDEN.write_text(dumps(run_content(_run(Path(tmp)))) + "\n")
    sys.exit(0)
