"""The refinement's candidate moves: one-token swaps, inserts and deletes, drawn per row, and
their exact screening.

A candidate differs from the row's current prompt from one position on (its first changed
position), so its forward reuses the current prompt's keys and values before it
(``screen_candidates``). Every draw comes from the row's own generator. After screening, a
row's improving swaps at distinct positions can be merged into one prompt and screened too
(``merge_swaps``, ``with_merges``), so one step can take several improvements.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

SCREEN_BATCH = 256
"""Candidate sequences per screening forward."""


def draw_candidates(
    current: Int[Tensor, "batch pos"],
    grad_top: Int[Tensor, "batch pos k"],
    lm_top: list[Tensor | None],
    n: int,
    generators: Sequence[torch.Generator],
    edits: bool = False,
    proposals: str = "both",
) -> tuple[Int[Tensor, "batch n pos"], Int[Tensor, "batch n"]]:
    """``n`` one-token moves per row and the first position each changes, from the row's own
    generator: swaps, and with ``edits`` every fourth candidate an insert or a delete (both keep
    the prompt's length and its last token: an insert drops a later token, a delete puts the
    new token later). A row with the model's expectations (``lm_top``) takes its tokens from them
    and the gradient's top-k alternately (``proposals='both'``), or from one of them only; with
    ``'model_only'`` (and for a fluent row with ``'model'``) ``grad_top`` already holds the
    model's top tokens."""
    batch, length = current.shape
    cands = current[:, None, :].repeat(1, n, 1).cpu()
    positions = torch.empty(batch, n, dtype=torch.long)
    grad_top = grad_top.cpu()
    base = current.cpu()
    for row, gen in enumerate(generators):
        pos = (torch.arange(n) % length)[torch.randperm(n, generator=gen)]
        rank = torch.randint(grad_top.shape[-1], (n,), generator=gen)
        at = pos.clone()  # where the new token goes (a delete puts it later)
        if edits and length >= 3:
            kind = torch.where(
                torch.arange(n) % 8 == 3, 1, torch.where(torch.arange(n) % 8 == 7, 2, 0)
            )
            pos = torch.where(kind > 0, pos.clamp(max=length - 3), pos)
            later = pos + 1 + (torch.rand(n, generator=gen) * (length - 2 - pos)).long()
            at = torch.where(kind == 2, later - 1, pos)
        else:
            kind, later = torch.zeros(n, dtype=torch.long), pos
        tokens = grad_top[row, at, rank]
        if lm_top[row] is not None and proposals not in ("gradient", "model_only"):
            lm = lm_top[row].cpu()
            from_lm = (
                torch.arange(n) % 2 == 1 if proposals == "both" else torch.ones(n, dtype=torch.bool)
            )
            lm_rank = torch.randint(lm.shape[-1], (n,), generator=gen)
            tokens = torch.where(from_lm, lm[at, lm_rank], tokens)
        old = base[row]
        for c in range(n):
            p, q, t = int(pos[c]), int(later[c]), int(tokens[c])
            if kind[c] == 0:
                cands[row, c, p] = t
            elif kind[c] == 1:  # insert t at p, drop the token at q (> p): both ends stay
                cands[row, c, p + 1 : q + 1] = old[p:q]
                cands[row, c, p] = t
            else:  # drop the token at p, insert t at q - 1 (>= p): both ends stay
                cands[row, c, p : q - 1] = old[p + 1 : q]
                cands[row, c, q - 1] = t
        positions[row] = pos
    return cands.to(current.device), positions


def merge_swaps(
    current: Int[Tensor, "batch pos"],
    cands: Int[Tensor, "batch n pos"],
    gain: Tensor,
    width: int,
) -> list[tuple[int, Tensor, int]]:
    """Each row's improving one-token swaps (``gain`` > 0) at distinct positions, best first,
    merged cumulatively: the best two, the best three, ... up to ``width`` swaps in one prompt.

    Returns (row, merged prompt, its first changed position) per merged candidate: screened like
    any candidate, a merge lets one step take several independent improvements at once.
    """
    merged: list[tuple[int, Tensor, int]] = []
    if width < 2:
        return merged
    diff = cands != current[:, None, :]
    single = (diff.sum(-1) == 1).tolist()
    where = diff.float().argmax(-1).tolist()  # the changed position of a one-token swap
    gains = gain.tolist()
    for row in range(cands.shape[0]):
        ids, taken = current[row].clone(), set()
        for c in gain[row].argsort(descending=True).tolist():
            if len(taken) >= width or not gains[row][c] > 0:
                break
            p = where[row][c]
            if not single[row][c] or p in taken:
                continue
            taken.add(p)
            ids[p] = cands[row, c, p]
            if len(taken) >= 2:
                merged.append((row, ids.clone(), min(taken)))
    return merged


def screen_candidates(
    target, cands, positions, current, feature_ids, keep_resid, share_prefix, prefix=None
):
    """Exact forwards of every candidate: (key, activation, resid or None), each [batch, n, ...].

    With ``share_prefix``, the current prompts' keys and values are computed once (or ``prefix``,
    already computed, is reused) and each candidate forwards only its suffix from the swapped
    position on.
    """
    batch, n, length = cands.shape
    if share_prefix and prefix is None:
        prefix = target.prefix_cache(current)
    owner = torch.arange(batch).repeat_interleave(n)
    keys, acts, resid = _screen(
        target, cands.reshape(batch * n, length), owner, positions.reshape(-1),
        feature_ids.repeat_interleave(n), prefix if share_prefix else None, keep_resid,
    )  # fmt: skip
    if resid is not None:
        resid = resid.reshape(batch, n, *resid.shape[1:])
    return keys.reshape(batch, n), acts.reshape(batch, n), resid


def _screen(target, flat, owner, flat_pos, fids, prefix, keep_resid):
    """(key, activation, resid or None) of every prompt of ``flat``: a whole forward each, or
    with ``prefix`` (the keys and values of each ``owner``'s current prompt) its suffix from its
    ``flat_pos`` on."""
    keys = torch.empty(len(flat), device=target.device)
    acts = torch.empty(len(flat), device=target.device)
    resid = None
    if prefix is None:
        groups = [(None, torch.arange(len(flat)))]
    else:
        groups = [(int(p), (flat_pos == p).nonzero().squeeze(-1)) for p in flat_pos.unique()]
    for p, members in groups:
        for lo in range(0, len(members), SCREEN_BATCH):
            idx = members[lo : lo + SCREEN_BATCH].to(target.device)
            if p is None:
                hook = target.hook_acts(flat[idx]).detach()
            else:
                start = p + target.start_offset
                hook = target.hook_acts_after_prefix(
                    prefix, owner[idx.cpu()].to(target.device), start, flat[idx, p:]
                )
            with torch.no_grad():
                readout = target.read(hook, fids[idx])
            keys[idx], acts[idx] = readout.key, readout.activation
            if keep_resid:
                if resid is None:
                    resid = torch.empty(len(flat), *hook.shape[1:], device=target.device)
                resid[idx] = hook
    return keys, acts, resid


def screen_merged(target, merged, prefix, feature_ids, keep_resid):
    """``_screen`` of ``merge_swaps``' candidates (rows index ``feature_ids`` and ``prefix``)."""
    flat = torch.stack([ids for _, ids, _ in merged]).to(target.device)
    owner = torch.tensor([row for row, _, _ in merged])
    flat_pos = torch.tensor([p for _, _, p in merged])
    fids = feature_ids[owner.to(feature_ids.device)]
    return _screen(target, flat, owner, flat_pos, fids, prefix, keep_resid)


def with_merges(
    target, cost, prefix, current, fids, cands, positions, c_key, c_act, c_resid, gain, width
):
    """``cands``, their positions and screening (key, activation, resid) with each row's merged
    swaps appended (``merge_swaps`` of its ``gain``; a row with fewer merges is padded with
    candidates of key -inf, which are never picked), and what each row's merges cost (each
    forwarded from its first changed position rounded down to a third of the prompt)."""
    batch = cands.shape[0]
    merged = merge_swaps(current, cands, gain, width)
    spent = [0.0] * batch
    if not merged:
        return cands, positions, c_key, c_act, c_resid, spent
    # each merge forwarded from its first changed position rounded down to a third of the
    # prompt: three small forwards instead of one per position, which cost more time than the
    # few extra positions (counted)
    third = max(1, cands.shape[2] // 3)
    merged = [(row, ids, p - p % third) for row, ids, p in merged]
    keys, acts, resid = screen_merged(target, merged, prefix, fids, c_resid is not None)
    m = max(width - 1, 1)
    x_ids = current[:, None, :].repeat(1, m, 1)
    x_pos = torch.zeros(batch, m, dtype=positions.dtype)
    x_key = torch.full((batch, m), float("-inf"), device=c_key.device)
    x_act = torch.zeros(batch, m, device=c_act.device)
    x_resid = None if c_resid is None else c_resid.new_zeros(batch, m, *c_resid.shape[2:])
    filled = [0] * batch
    for i, (row, ids, p) in enumerate(merged):
        k = filled[row]
        filled[row] += 1
        x_ids[row, k], x_pos[row, k], x_key[row, k], x_act[row, k] = ids, p, keys[i], acts[i]
        if x_resid is not None:
            x_resid[row, k] = resid[i]
        spent[row] += cost.suffix(p) if prefix is not None else cost.sequence
    cat = lambda a, b: None if a is None else torch.cat([a, b], dim=1)  # noqa: E731
    return (
        cat(cands, x_ids.to(cands.device)), cat(positions, x_pos), cat(c_key, x_key),
        cat(c_act, x_act), cat(c_resid, x_resid), spent,
    )  # fmt: skip
