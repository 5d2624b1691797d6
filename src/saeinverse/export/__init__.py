"""Exports of a run's results to other tools' formats (``saeinverse export RUN --to FORMAT DIR``)."""

from saeinverse.export.neuronpedia import read_neuronpedia
from saeinverse.export.run import EXPORTERS, export_neuronpedia, export_run

__all__ = ["EXPORTERS", "export_neuronpedia", "export_run", "read_neuronpedia"]
