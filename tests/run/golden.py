"""A run's results as plain values, and a comparison of two of them that tolerates float rounding.

``run_content(run_dir)`` reads every result file below a run directory, whatever its stage, into
JSON values keyed by the file's path in the run (``"collect/feature_stats.json"``). Bookkeeping is
left out: success markers, ``config.yaml``, ``meta.json``, ``identity.json``, the report's HTML,
hidden files (the lock, temporary files) and checkpoint folders (``units/``); so are the keys in
``VOLATILE_KEYS`` (timings, and the models' identity: a fingerprint kept for caching). A file is
read as

- ``.json``: its value; ``.jsonl``: the list of its rows' values;
- ``.safetensors``: ``{tensor: {"dtype", "shape", "values"}}``, the values as nested lists when
  the tensor holds at most ``STORED_NUMEL`` numbers, else ``"summary"`` instead of ``"values"``:
  ``sha256`` of an integer or boolean tensor's bytes, or a float tensor's ``abs_sum``,
  ``sq_sum``, ``min`` and ``max``;
- anything else: ``{"sha256": ...}`` of its bytes.

``compare(expected, actual)`` walks two such values and lists every difference by its path
(``"invert/inversions.json: [0].refined_activation: 3.1 != 3.2"``): strings, integers, booleans,
None, dict keys and list lengths must be equal, and floats close, ``|a - e| <= ATOL + RTOL * |e|``
(NaN equals NaN; a value the writer rounded may also be one unit off in its last place). ``artifact_digests(run_dir)`` is the strict form for two runs of one machine:
a sha256 per result file, timings left out.

Across CPUs. The golden run loads the saved SAE of ``tests/fixtures`` (it never trains one), so
its model, SAE and inputs are the same bits on every CPU, and another instruction set changes
only the last bits of float results (a matrix product summed in another order). A discrete
result (an exemplar's rank, a cluster label, a selected id, a projected or swapped token, an
explanation's words) can then change only where candidates tie within that rounding, or where
a step amplifies it: UMAP does. Fed inputs that differ in the 7th digit, its layout comes out
another picture (its output is the same bits for the same input on every instruction set), so
everything read off a UMAP layout can change across CPUs: the clusters when they are found in a
UMAP space (``clustering.umap.n_components`` > 0) and the default selection rule 'spread',
which orders clusters over the 2-D map. The golden run therefore clusters the features' own
vectors (``n_components: 0``) and selects by rule 'per_cluster' (``test_golden.GOLDEN_RUN``),
and the comparison reads the 2-D map (``LAYOUT_KEYS``) by structure only. Checked on an
AVX-512/AMX machine, natively against ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
DNNL_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE`` (and ``NUMBA_CPU_NAME=haswell``): every string and
integer equal, every float within 1.2e-6 relative (``RTOL`` leaves an eightyfold margin).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saeinverse.artifacts import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    IDENTITY_FILE,
    MARKER,
    META_FILE,
    REPORT_FILE,
)

RTOL = 1e-4
"""Relative tolerance of a float: float32 arithmetic summed in another order, through the few
optimiser steps of the tiny run, stays well inside it (measured: 1.2e-6 at most)."""
ATOL = 1e-6
"""Absolute tolerance of a float, for values that should be 0."""
ROUNDED = range(4, 7)
"""A float whose shortest form has this many decimals was rounded by the artifact's writer
(``round(x, 4)``); it also agrees with a value one unit away in that place, where rounding
turned a last-bit difference into a step."""
STORED_NUMEL = 4096
"""A tensor with at most this many numbers is stored whole; a larger one by a summary."""
BOOKKEEPING = {MARKER, CONFIG_FILE, META_FILE, IDENTITY_FILE, REPORT_FILE}
"""File names that record how a run went, not what it found."""
VOLATILE_KEYS = {"seconds", "timings", "identity"}
"""JSON keys left out wherever they appear: timings, and the models' identity (a fingerprint)."""
LAYOUT_KEYS = {"embedding_2d", "centroid_2d"}
"""UMAP's 2-D map of the features and what is read off it: compared by structure (keys, dtype,
shape), not by value. UMAP's stochastic layout turns last-bit differences of its input into
another picture (see the module docstring)."""


def result_files(run_dir: str | Path) -> Iterator[Path]:
    """Every result file below ``run_dir``, sorted; bookkeeping and checkpoints left out."""
    for path in sorted(Path(run_dir).rglob("*")):
        parts = path.relative_to(run_dir).parts
        if (
            path.is_file()
            and path.name not in BOOKKEEPING
            and not any(p.startswith(".") or p == CHECKPOINT_DIR for p in parts)
        ):
            yield path


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _json_value(path: Path) -> Any:
    if path.suffix == ".json":
        return _strip(json.loads(path.read_text()))
    rows = (line for line in path.read_text().splitlines() if line)
    return [_strip(json.loads(row)) for row in rows]


def _tensor_content(tensor) -> dict[str, Any]:
    import torch

    entry: dict[str, Any] = {"dtype": str(tensor.dtype).removeprefix("torch."),
                             "shape": list(tensor.shape)}  # fmt: skip
    if tensor.numel() <= STORED_NUMEL:
        if tensor.is_floating_point():  # to float32's shortest decimal form: 9 digits at most
            short = [float(str(v)) for v in tensor.float().numpy().ravel()]
            tensor = torch.tensor(short, dtype=torch.float64).reshape(tensor.shape)
        entry["values"] = tensor.tolist()
    elif tensor.is_floating_point():
        values = tensor.double()
        entry["summary"] = {
            "abs_sum": float(values.abs().sum()),
            "sq_sum": float(values.square().sum()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    else:
        data = tensor.contiguous().numpy().tobytes()
        entry["summary"] = {"sha256": hashlib.sha256(data).hexdigest()}
    return entry


def _file_content(path: Path) -> Any:
    if path.suffix in (".json", ".jsonl"):
        return _json_value(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return {name: _tensor_content(tensors[name]) for name in sorted(tensors)}
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def run_content(run_dir: str | Path) -> dict[str, Any]:
    """``{path in the run: content}`` for every result file of ``run_dir`` (see the module)."""
    return {
        path.relative_to(run_dir).as_posix(): _file_content(path) for path in result_files(run_dir)
    }


def _decimals(value: float) -> int | None:
    text = repr(value)
    return None if "e" in text or "." not in text else len(text) - text.index(".") - 1


def _close(expected: float, actual: float, rtol: float, atol: float) -> bool:
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    if math.isinf(expected) or math.isinf(actual):
        return expected == actual
    if abs(actual - expected) <= atol + rtol * abs(expected):
        return True
    places = [_decimals(expected), _decimals(actual)]
    if None in places or max(places) not in ROUNDED:
        return False
    return abs(actual - expected) <= 1.5 * 10.0 ** -max(places)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(
    expected: Any, actual: Any, rtol: float = RTOL, atol: float = ATOL, path: str = ""
) -> list[str]:
    """Every difference between two JSON values, each named by its path (empty: they agree).

    Floats (and an integer met by a float) agree within ``atol + rtol * |expected|`` (or one
    unit in the last place of a rounded value, ``ROUNDED``); strings, integers, booleans and
    None must be equal; dicts need the same keys, lists the same length.
    """
    where = path or "<root>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(expected.keys() | actual.keys(), key=str):
            inner = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{inner}: missing")
            elif key not in expected:
                found.append(f"{inner}: not in the expected values")
            elif key in LAYOUT_KEYS:
                found += compare(_structure(expected[key]), _structure(actual[key]), path=inner)
            else:
                found += compare(expected[key], actual[key], rtol, atol, inner)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items != {len(expected)} expected"]
        found = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found += compare(e, a, rtol, atol, f"{path}[{i}]")
        return found
    if _is_number(expected) and _is_number(actual):
        if isinstance(expected, int) and isinstance(actual, int):
            ok = expected == actual
        else:
            ok = _close(float(expected), float(actual), rtol, atol)
        return [] if ok else [f"{where}: {actual!r} != {expected!r} expected"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {_short(actual)} != {_short(expected)} expected"]
    return []


def _structure(value: Any) -> Any:
    """``value`` with every float replaced by None: keys, lengths, strings and integers kept."""
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    return None if isinstance(value, float) else value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare_runs(expected: dict[str, Any], run_dir: str | Path, **tolerance: float) -> list[str]:
    """``compare`` of recorded content with the content of ``run_dir``, file by file."""
    actual = run_content(run_dir)
    found = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            found.append(f"{name}: missing from the run")
        elif name not in expected:
            found.append(f"{name}: a new file, not in the recorded run")
        else:
            found += [f"{name}: {d}" for d in compare(expected[name], actual[name], **tolerance)]
    return found


def dumps(content: Any, indent: str = "") -> str:
    """``content`` as JSON text: one line per dict entry and per list of lists, a list of
    numbers or strings on one line (a recorded run stays readable and diffable)."""
    inner = indent + " "
    if isinstance(content, dict) and content:
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in sorted(content.items())]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(content, list) and any(isinstance(v, dict | list) for v in content):
        items = [f"{inner}{dumps(v, inner)}" for v in content]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(content, ensure_ascii=False)


def artifact_digests(run_dir: str | Path) -> dict[str, str]:
    """``{path in the run: sha256}`` per result file, JSON read without timings: equal digests
    mean equal results, bit for bit (for two runs on one machine)."""
    digests = {}
    for path in result_files(run_dir):
        if path.suffix in (".json", ".jsonl"):
            data = json.dumps(_json_value(path), sort_keys=True).encode()
        else:
            data = path.read_bytes()
        digests[path.relative_to(run_dir).as_posix()] = hashlib.sha256(data).hexdigest()[:16]
    return digests
