"""The refinement's candidate moves: one-token swaps, inserts and deletes, drawn per row, and
their exact screening.

A candidate differs from the row's current prompt from one position on (its first changed
position), so its forward reuses the current prompt's keys and values before it
(``screen_candidates``). Every draw comes from the row's own generator.
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


def screen_candidates(target, cands, positions, current, feature_ids, keep_resid, share_prefix):
    """Exact forwards of every candidate: (key, activation, resid or None), each [batch, n, ...].

    With ``share_prefix``, the current prompts' keys and values are computed once and each
    candidate forwards only its suffix from the swapped position on.
    """
    batch, n, length = cands.shape
    keys = torch.empty(batch, n, device=target.device)
    acts = torch.empty(batch, n, device=target.device)
    resid = None
    if not share_prefix:
        groups = [(None, torch.arange(batch * n))]
    else:
        prefix = target.prefix_cache(current)
        flat_pos = positions.reshape(-1)
        groups = [(int(p), (flat_pos == p).nonzero().squeeze(-1)) for p in flat_pos.unique()]
    flat = cands.reshape(batch * n, length)
    fids = feature_ids.repeat_interleave(n)
    for p, members in groups:
        for lo in range(0, len(members), SCREEN_BATCH):
            idx = members[lo : lo + SCREEN_BATCH].to(target.device)
            if p is None:
                hook = target.hook_acts(flat[idx]).detach()
            else:
                start = p + target.start_offset
                hook = target.hook_acts_after_prefix(prefix, idx // n, start, flat[idx, p:])
            with torch.no_grad():
                readout = target.read(hook, fids[idx])
            keys.view(-1)[idx], acts.view(-1)[idx] = readout.key, readout.activation
            if keep_resid:
                if resid is None:
                    resid = torch.empty(batch * n, *hook.shape[1:], device=target.device)
                resid[idx] = hook
    if resid is not None:
        resid = resid.reshape(batch, n, *resid.shape[1:])
    return keys, acts, resid
