"""Where a feature's search rows draw their randomness, and where its fluent row starts.

Every random draw of a feature comes from its own stream (``generator``: seed, feature id,
stream), so a feature gets the same search alone or in a batch.
"""

from __future__ import annotations

import torch

from saeinverse.invert.fluency import Fluency

SOFT, UNCONSTRAINED, FLUENT, FLUENT_START, FLUENT_SOFT = 0, 1, 2, 3, 4
"""Random streams per feature: the soft start, the unconstrained row, the fluent row, the real
windows its start is chosen from, and (``fluent_start='both'``) the second fluent row, which
starts from the soft prompt."""
FLUENT_STREAMS = (FLUENT, FLUENT_SOFT)
TRAJECTORY_NAMES = {UNCONSTRAINED: "refine", FLUENT: "fluent", FLUENT_SOFT: "fluent_soft"}
FLUENT_START_SCREEN = 64
"""Real text windows (within the hinge) screened per feature for the fluent row's start."""


def generator(seed: int, feature_id: int, stream: int) -> torch.Generator:
    """The random stream ``stream`` of one feature (see ``SOFT``, ``UNCONSTRAINED``, ``FLUENT``)."""
    value = ((int(seed) * 1_000_003 + int(feature_id)) * 8 + int(stream)) % (2**63)
    return torch.Generator().manual_seed(value)


def fluent_starts(target, bound, hinge, ids, seed, windows=None):
    """Per feature, the real text a fluent row starts from; (starts, sequences screened).

    A feature with exemplar windows (``windows[i]``, its top exemplars of the prompt's length)
    starts from the most active of them within the hinge (the most active of all when none is
    within it: the hinge then pulls the row towards fluency); the others from the most active of
    ``FLUENT_START_SCREEN`` random real windows within the hinge (those the bound was measured
    on). ``(None, zeros)`` when a feature has neither.
    """
    windows = windows or [[] for _ in ids]
    pool = bound.fluent_windows(hinge) if bound is not None else None
    if pool is None and not all(windows):
        return None, [0] * len(ids)
    rows, owners, spans = [], [], []
    for f, own in zip(ids, windows, strict=True):
        if own:
            cands = torch.tensor(own, dtype=torch.long)
        else:
            pick = torch.randperm(len(pool), generator=generator(seed, f, FLUENT_START))
            cands = pool[pick[:FLUENT_START_SCREEN]]
        rows.append(cands)
        owners += [f] * len(cands)
        spans.append((len(cands), bool(own)))
    rows = torch.cat(rows).to(target.device)
    owners = torch.tensor(owners, device=target.device)
    keys = torch.cat([
        target.read_ids(rows[lo : lo + 256], owners[lo : lo + 256]).key
        for lo in range(0, len(rows), 256)
    ]).cpu()  # fmt: skip
    own_rows = torch.tensor([own for n, own in spans for _ in range(n)])
    ce = torch.full((len(rows),), float("-inf"))
    if own_rows.any():
        ce[own_rows] = Fluency(target).cross_entropy(rows[own_rows.to(rows.device)]).float().cpu()
    starts, screened, cursor = [], [], 0
    for n, own in spans:
        key, within = keys[cursor : cursor + n], ce[cursor : cursor + n] <= hinge
        if within.any():
            key = key.masked_fill(~within, float("-inf"))
        starts.append(rows[cursor + int(key.argmax())])
        screened.append(2 * n if own else n)  # an exemplar window's cross-entropy: one more
        cursor += n
    return torch.stack(starts), screened
