"""The Ray engine (``scale.engine: ray``): collection sharded by prompt range, inversion and
explanation fanned out in batches of features, each unit saved as it finishes.

Needs the optional extra: ``pip install 'saeinverse[ray]'``. Ray is imported only when a
function here runs.
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
from saeinverse.scale.sharded import collect_sharded, ensure_default_sae, merge_in_order

__all__ = [
    "ScaleError",
    "Unit",
    "UnitStore",
    "WorkerPool",
    "close_pools",
    "collect_sharded",
    "ensure_default_sae",
    "ensure_ray",
    "explain_fanned",
    "explainer",
    "invert_fanned",
    "inverter",
    "merge_in_order",
    "worker_pool",
]
