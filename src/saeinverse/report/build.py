"""``build_report``: read a run directory's artifacts and write its ``report.html`` atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from saeinverse.artifacts import REPORT_DIR, REPORT_FILE
from saeinverse.io import write_text
from saeinverse.report import html as report_html
from saeinverse.report.loaders import load_run
from saeinverse.report.sections import feature_cards, overview

logger = logging.getLogger(__name__)


def build_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the run's ``report.html`` (default ``<run_dir>/report/report.html``) atomically.

    Reads only saved artifacts (``saeinverse.report.loaders``); stages that are off, unfinished
    or stale are left out with a note. Returns the path written.
    """
    run = load_run(run_dir)
    output = Path(output) if output is not None else Path(run_dir) / REPORT_DIR / REPORT_FILE
    figures = report_html.FigureSink()
    body = overview(run, figures) + feature_cards(run, figures)
    nav = [("overview", "Overview"), ("collection", "Features"), ("clusters", "Clusters"),
           ("inversion", "Inversion"), ("features", "Selected features")]  # fmt: skip
    nav += [(f"feature-{f}", f"#{f}") for f in run.selected_ids]
    models = run.models or {}
    subtitle = " · ".join(
        str(x) for x in (models.get("model"), models.get("hook_name"), run.meta.get("updated")) if x
    )
    write_text(output, report_html.page(f"saeinverse report: {run.name}", subtitle, nav, body))
    logger.info(
        "report: %d figures, %d feature cards → %s", figures.count, len(run.selected_ids), output
    )
    return output


def visualize_results(
    run: Any, output: str | Path | None = None, *, open_browser: bool = False
) -> Path:
    """The seed's notebook call: build the report of a run directory or of a pipeline context
    (anything with ``.run.root``, as ``run_experiment`` returns); optionally open it."""
    if not isinstance(run, str | Path):
        run = run.run.root if hasattr(run, "run") else run.root
    path = build_report(Path(run), output)
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return path
