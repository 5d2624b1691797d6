"""Where a feature's search rows draw their randomness, and where its fluent row starts.

Every random draw of a feature comes from its own stream (``generator``: seed, feature id,
stream), so a feature gets the same search alone or in a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saeinverse.invert.fluency import Fluency

SOFT, UNCONSTRAINED, FLUENT, FLUENT_START, FLUENT_SOFT, BEAM = 0, 1, 2, 3, 4, 5
"""Random streams per feature: the soft start, the unconstrained row, the fluent row, the real
windows its start is chosen from, (``fluent_start='both'``) the second fluent row, which starts
from the soft prompt, and the beam that builds a start from scratch."""
FLUENT_STREAMS = (FLUENT, FLUENT_SOFT)
TRAJECTORY_NAMES = {UNCONSTRAINED: "refine", FLUENT: "fluent", FLUENT_SOFT: "fluent_soft"}
FLUENT_START_SCREEN = 64
"""Real text windows (within the hinge) screened per feature for the fluent row's start."""


def generator(seed: int, feature_id: int, stream: int, member: int = 0) -> torch.Generator:
    """The random stream ``stream`` of one feature (see ``SOFT``, ``UNCONSTRAINED``, ``FLUENT``);
    ``member``: which of a population's rows on that stream (0 for the first or only one)."""
    value = (int(seed) * 1_000_003 + int(feature_id)) * 8 + int(stream)
    if member:
        value = value * 1_009 + int(member)
    return torch.Generator().manual_seed(value % (2**63))


def member_weight(weight: float, member: int) -> float:
    """Member ``member``'s fluency weight in a population: ``weight`` x 2^k, k = 0, -1, 1, -2, 2..."""
    k = (member + 1) // 2 * (1 if member % 2 == 0 else -1)
    return float(weight) * 2.0**k


def fluent_starts(
    target, bound, hinge, ids, seed, windows=None, beam=None, rank=None, most_active=None
):
    """Per feature, the prompt its fluent row starts from; (starts, spent, beams).

    A feature with an exemplar window within the hinge (``windows[i]``: its top exemplars of the
    prompt's length) starts from the most active of those. Any other feature starts, when
    ``beam`` is given (``beam(indices) -> BeamResult | None``), from its beam's best prompt, or
    from its most active exemplar window when that fires and the prompt does not, or when
    ``rank(i, key, cross_entropy)`` (a fluent row's score) puts it higher; without a beam, from
    its most active exemplar window (the hinge then pulls the row towards fluency), and with
    none, from the most active of ``FLUENT_START_SCREEN`` random real windows within the hinge
    (those the bound was measured on). ``spent``: sequence-equivalents each feature's start
    cost; ``beams``: each feature's beam prompts (for the check). ``starts`` is None when some
    feature has no start at all.
    ``most_active``, when given, is filled with each feature's most active exemplar window at
    any cross-entropy and its key, (ids, key), or None without windows.
    """
    from saeinverse.invert.cost import Cost

    cost = Cost.of(target, bound.length)
    windows = windows or [[] for _ in ids]
    rows, owners, spans = [], [], []
    for i, own in enumerate(windows):
        rows += own
        owners += [ids[i]] * len(own)
        spans.append(len(own))
    keys = _keys(target, torch.tensor(rows, dtype=torch.long), owners)
    ce = Fluency(target).cross_entropy(torch.tensor(rows, device=target.device)).float().cpu()
    spent = [n * (cost.sequence + cost.full) for n in spans]
    starts: list = [None] * len(ids)
    best: list = [None] * len(ids)
    cursor = 0
    for i, n in enumerate(spans):
        key, c = keys[cursor : cursor + n], ce[cursor : cursor + n]
        if n:
            top = int(key.argmax())  # the most active window at any cross-entropy
            if most_active is not None:
                most_active[i] = (torch.tensor(rows[cursor + top]), float(key[top]))
            within = c <= hinge
            if within.any():
                j = int(key.masked_fill(~within, float("-inf")).argmax())
                starts[i] = torch.tensor(rows[cursor + j])
            else:
                best[i] = (torch.tensor(rows[cursor + top]), float(key[top]), float(c[top]))
        cursor += n
    beams: list[list[list[int]]] = [[] for _ in ids]
    need = [i for i, start in enumerate(starts) if start is None]
    found = beam(need) if beam is not None and need else None
    for k, i in enumerate(need):
        if found is not None:
            spent[i] += found.spent[k]
            beams[i] = found.prompts[k]
            starts[i] = torch.tensor(found.prompts[k][0])
            if best[i] is not None and _window_first(best[i], found, k, rank(i, *best[i][1:])):
                starts[i] = best[i][0]
        elif best[i] is not None:
            starts[i] = best[i][0]
    _random_starts(target, bound, hinge, ids, seed, starts, spent)
    if any(start is None for start in starts):
        return None, spent, beams
    return torch.stack(starts).to(target.device), spent, beams


def _window_first(window, found, k: int, window_score: float) -> bool:
    """Whether a feature's most active real window (ids, key, cross-entropy), above the hinge,
    is a better start than its beam's best prompt: when it fires and that prompt does not (as
    the key ranks every firing prompt above every silent one), else when a fluent row's score
    puts it higher."""
    fires, beam_fires = window[1] > 0, found.activation[k][0] > 0
    if fires != beam_fires:
        return fires
    return window_score > found.score[k][0]


def _keys(target, rows: Tensor, owners: list[int]) -> Tensor:
    """The key of each row's own feature (screening forwards in chunks)."""
    if len(rows) == 0:
        return torch.zeros(0)
    rows, owners = rows.to(target.device), torch.tensor(owners, device=target.device)
    return torch.cat([
        target.read_ids(rows[lo : lo + 256], owners[lo : lo + 256]).key
        for lo in range(0, len(rows), 256)
    ]).cpu()  # fmt: skip


def _random_starts(target, bound, hinge, ids, seed, starts, spent) -> None:
    """Fill the features that have no start with the most active of ``FLUENT_START_SCREEN``
    random real windows within the hinge (in place; nothing when none are known)."""
    pool = bound.fluent_windows(hinge) if bound is not None else None
    if pool is None:
        return
    for i, f in enumerate(ids):
        if starts[i] is not None:
            continue
        pick = torch.randperm(len(pool), generator=generator(seed, f, FLUENT_START))
        cands = pool[pick[:FLUENT_START_SCREEN]]
        key = _keys(target, cands, [f] * len(cands))
        starts[i] = cands[int(key.argmax())]
        spent[i] += len(cands)
