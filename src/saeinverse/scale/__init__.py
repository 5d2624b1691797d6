"""The Ray engine: a pool of workers (``RayPool``) with ``saeinverse.units.Pool``'s interface.

``saeinverse.run`` chooses the pool once per run (``scale.engine``): in-process, or this one
(optional extra: ``pip install 'saeinverse[ray]'``; Ray is imported only when a pool starts).
Nothing below ``saeinverse.run`` imports this package.
"""

from saeinverse.scale.engine import RayPool, ScaleError, close_pools, ensure_ray, ray_pool

__all__ = ["RayPool", "ScaleError", "close_pools", "ensure_ray", "ray_pool"]
