"""What inversion takes from collection: each feature's dataset maximum and top exemplar windows.

All read a ``FeatureStats`` (see ``saeinverse.collect.stats``) or the reference pass's windows
(``collect.reference.RealWindow``) and return dicts keyed by feature id, the form
``optimize_features`` accepts as ``dataset_max``, ``exemplar_tokens`` and ``exemplar_windows``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from saeinverse.collect.reference import RealWindow


def dataset_maxima(stats, feature_ids: Sequence[int]) -> dict[int, float]:
    """Each feature's maximum activation over the collection."""
    return {int(f): float(stats.max_activation[int(f)]) for f in feature_ids}


def exemplar_tails(
    stats,
    feature_ids: Sequence[int],
    length: int,
    exclude_prompts: Mapping[int, Collection[int]] | Collection[int] | None = None,
) -> dict[int, list[int]]:
    """Each feature's top exemplar as the ``length`` tokens ending at its peak token.

    The start token (and any masked leading position) is excluded, so the ids are a prompt as
    inversion writes them; a feature without exemplars (dead) is left out. ``exclude_prompts``
    names collection prompt indices an exemplar must not come from (per feature id, or one set
    for all): the prompts the explain stage holds out for scoring, so that no inverted prompt
    starts from one of them.
    """
    windows = exemplar_windows(stats, feature_ids, length, exclude_prompts, count=1, whole=False)
    return {f: w[0] for f, w in windows.items()}


def exemplar_windows(
    stats,
    feature_ids: Sequence[int],
    length: int,
    exclude_prompts: Mapping[int, Collection[int]] | Collection[int] | None = None,
    *,
    count: int = 8,
    whole: bool = True,
) -> dict[int, list[list[int]]]:
    """Up to ``count`` of each feature's top exemplars, strongest first, each as the ``length``
    tokens ending at its peak token (see ``exemplar_tails``); ``whole``: only windows of exactly
    ``length`` tokens (an exemplar peaking nearer its prompt's start is left out), one per prompt.
    """
    found: dict[int, list[list[int]]] = {}
    first = int(stats.first_position)
    for f in feature_ids:
        if isinstance(exclude_prompts, Mapping):
            excluded = set(exclude_prompts.get(int(f), ()))
        else:
            excluded = set(exclude_prompts or ())
        windows, seen = [], set()
        for e in stats.top_exemplars(int(f)):
            if e.prompt_index in excluded or e.prompt_index in seen:
                continue
            lo = max(first, e.position - length + 1)
            if whole and e.position + 1 - lo < length:
                continue
            seen.add(e.prompt_index)
            windows.append(stats.tokens[e.prompt_index, lo : e.position + 1].tolist())
            if len(windows) == count:
                break
        if windows:
            found[int(f)] = windows
    return found


def reference_windows(
    real: Mapping[int, Sequence[RealWindow]],
    feature_ids: Sequence[int],
    length: int,
    *,
    whole: bool = True,
) -> dict[int, list[list[int]]]:
    """Each feature's reference windows (``collect.reference.RealWindow``) as the ``length``
    tokens ending at the peak, strongest first; ``whole``: only windows of exactly ``length``
    tokens."""
    found: dict[int, list[list[int]]] = {}
    for f in feature_ids:
        windows = [
            list(w.tokens[-length:])
            for w in real.get(int(f), ())
            if not whole or len(w.tokens) >= length
        ]
        if windows:
            found[int(f)] = windows
    return found


def merge_windows(*sources: Mapping[int, list[list[int]]]) -> dict[int, list[list[int]]]:
    """Each feature's windows from every source in order, each distinct window once."""
    merged: dict[int, list[list[int]]] = {}
    for source in sources:
        for f, windows in source.items():
            own = merged.setdefault(int(f), [])
            own += [w for w in windows if w not in own]
    return merged
