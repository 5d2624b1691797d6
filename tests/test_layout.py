"""The package's shape: modules stay small, no private name crosses a module boundary, and the
stage list is one table that the pipeline, the CLI and the report all read."""

from __future__ import annotations

import ast
from pathlib import Path

import saeinverse

PACKAGE = Path(saeinverse.__file__).parent
MAX_LINES = 420
"""~400 lines, with a little slack for a docstring."""
KNOWN_LONG: set[str] = set()
"""None left."""
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()
"""None left."""


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_about_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) <= KNOWN_LONG, long


def test_no_private_name_is_imported_across_modules():
    found = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("saeinverse"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.add((str(path.relative_to(PACKAGE)), node.module, alias.name))
    assert found <= KNOWN_PRIVATE, sorted(found - KNOWN_PRIVATE)


def test_one_stage_list_read_by_pipeline_cli_and_report():
    from saeinverse import artifacts
    from saeinverse.cli import STAGE_COMMANDS
    from saeinverse.report import loaders
    from saeinverse.run.stages import STAGES

    names = list(artifacts.STAGE_NAMES)
    assert [s.name for s in STAGES] == names
    assert all(s.spec is artifacts.stage_spec(s.name) for s in STAGES)
    assert list(STAGE_COMMANDS) == [n for n in names if n not in ("models", "report")]
    assert [s.name for s in loaders.STAGES] == names[:-1]  # the report reads every other stage
    for spec in loaders.ARTIFACTS:
        assert spec.filename in artifacts.stage_spec(spec.stage).artifacts
