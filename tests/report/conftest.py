"""A tiny finished run directory, made once per session by ``run_experiment`` on the tiny run
(``tests.builders``) with the report's own prompts and settings.

Some prompts hold HTML-like text (``<b>``, ``&``, quotes, ``</script>``): the character tokenizer
makes each of those characters a token of its own. The noise features are a group of their own,
and the explanations come from the 'tokens' explainer. The run builds no report: the tests do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests import builders

NASTY = "</script><b>bold</b> & \"quoted\" 'single' <!-- x -->"
REPORT_RUN = {
    "pipeline": {"run_visualization": False},  # the tests build the report
    "data": {
        "n_prompts": 48,
        "max_length": 40,
        "filtering": {"sparsity_max": 0.3, "entropy_threshold_low": 0.5},
    },
    "clustering": {
        "umap": {"n_neighbors": 5},
        "hdbscan": {"min_cluster_size": 3},
        "selection": {"features_per_cluster": 2, "max_features": 4, "include_noise": True},
    },
    "optimization": {
        "length": 6,
        "max_steps": 30,
        "refine_steps": 10,
        "refine_candidates": 16,
        "patience": 15,
    },
    "explanation": {"explainer": "tokens"},
    "output": {"name": "tiny"},
}
"""The report run's changes to the tiny run (``builders.tiny_overrides``)."""


def tiny_prompts() -> list[str]:
    from tests.explain.conftest import random_prompts

    words = random_prompts(36, seed=1)
    return words + [f"{NASTY} {i} {w[:12]}" for i, w in enumerate(words[:12])]


def build_tiny_run(root: Path, until: str | None = None, **changes) -> Path:
    """``run_experiment`` of the report run (``REPORT_RUN`` with ``changes``) over
    ``tiny_prompts()`` into ``root/run``, on one thread and with a cache in ``root/cache``;
    ``until`` stops after that stage. Returns the run directory."""
    from saeinverse.run.pipeline import run_experiment

    root.mkdir(parents=True, exist_ok=True)
    source = root / "prompts.jsonl"
    source.write_text("".join(json.dumps({"text": p}) + "\n" for p in tiny_prompts()))
    config = builders.tiny_config(
        **builders.merged(REPORT_RUN, {"data": {"source": str(source)}, **changes})
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SAEINVERSE_CACHE", str(root / "cache"))
            run_experiment(config, run_dir=root / "run", until=until)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory of the report run (read-only: copy it to change it)."""
    return build_tiny_run(tmp_path_factory.mktemp("report-run"))


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, free to change."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))
