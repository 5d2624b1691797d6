"""The visual report: Plotly figures and one self-contained ``report.html`` per run.

``build_report(run_dir)`` reads a run directory's saved artifacts (``loaders.load_run``) and
writes ``<run_dir>/report/report.html``; ``visualize_results`` is the notebook name for it.
Every figure is drawn from saved artifacts; nothing is recomputed.
"""

from saeinverse.artifacts import REPORT_DIR, REPORT_FILE
from saeinverse.report.build import build_report, visualize_results
from saeinverse.report.loaders import RunArtifacts, load_run

__all__ = [
    "REPORT_DIR",
    "REPORT_FILE",
    "RunArtifacts",
    "build_report",
    "load_run",
    "visualize_results",
]
