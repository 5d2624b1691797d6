"""The engines: collection sharded by prompt range, inversion and explanation in batches of
features, each unit saved as it finishes and reused by a rerun. ``scale.engine: ray`` runs the
units on Ray workers (optional extra: ``pip install 'saeinverse[ray]'``; Ray is imported only
when a Ray function runs); ``scale.engine: local`` runs the same plan in this process
(``saeinverse.scale.local``, never imports Ray).
"""

from saeinverse.scale.engine import (
    ScaleError,
    Unit,
    UnitStore,
    WorkerPool,
    close_pools,
    ensure_ray,
    worker_pool,
)
from saeinverse.scale.fanout import explain_fanned, explainer, invert_fanned, inverter
from saeinverse.scale.local import LocalPool, collect_local, local_explainer, local_inverter
from saeinverse.scale.sharded import collect_sharded, ensure_default_sae, merge_in_order

__all__ = [
    "LocalPool",
    "ScaleError",
    "Unit",
    "UnitStore",
    "WorkerPool",
    "close_pools",
    "collect_local",
    "collect_sharded",
    "ensure_default_sae",
    "ensure_ray",
    "explain_fanned",
    "explainer",
    "invert_fanned",
    "inverter",
    "local_explainer",
    "local_inverter",
    "merge_in_order",
    "worker_pool",
]
