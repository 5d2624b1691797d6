"""A digest of a run's artifacts that ignores timings: equal digests mean equal results.

Used by the golden test: the restructure must not change a single statistic, cluster label,
selected id, inverted prompt or explanation for the same seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SKIPPED = {"_SUCCESS.json", "meta.json", "config.yaml", "report.html", "models.json"}
"""Bookkeeping, not results (timings, versions, paths, file times)."""
VOLATILE_KEYS = {"seconds", "timings"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _content(path: Path) -> bytes:
    if path.suffix == ".json":
        return json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        rows = [_strip(json.loads(line)) for line in path.read_text().splitlines() if line]
        return json.dumps(rows, sort_keys=True).encode()
    return path.read_bytes()


def artifact_digests(run_dir: str | Path) -> dict[str, str]:
    """``{stage/file: sha256}`` for every result artifact of a run directory."""
    run_dir = Path(run_dir)
    return {
        str(path.relative_to(run_dir)): hashlib.sha256(_content(path)).hexdigest()[:16]
        for path in sorted(run_dir.glob("*/*"))
        if path.is_file() and path.name not in SKIPPED and not path.name.startswith(".")
    }
