"""What inversion takes from collection: each feature's dataset maximum and top exemplar.

Both read a ``FeatureStats`` (see ``saeinverse.collect.stats``) and return dicts keyed by feature id,
the form ``optimize_features`` accepts as ``dataset_max`` and ``exemplar_tokens``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


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
    for all): the prompts the explain stage holds out for scoring, so that the refined prompt
    shown to the explainer never starts from one of them. The stage passes
    ``explain.sampling.plan_feature(...).heldout`` for each feature.
    """
    tails: dict[int, list[int]] = {}
    for f in feature_ids:
        if isinstance(exclude_prompts, Mapping):
            excluded = set(exclude_prompts.get(int(f), ()))
        else:
            excluded = set(exclude_prompts or ())
        found = [e for e in stats.top_exemplars(int(f)) if e.prompt_index not in excluded]
        if not found:
            continue
        best = found[0]
        lo = max(int(stats.first_position), best.position - length + 1)
        tails[int(f)] = stats.tokens[best.prompt_index, lo : best.position + 1].tolist()
    return tails
