"""Turn per-sample, per-modality masking probabilities p into a per-token keep mask."""

from __future__ import annotations

import torch


def build_keep(
    p: torch.Tensor, valid: torch.Tensor, token_group: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Keep mask [B, T] bool over the model's flat token layout.

    p: [B, M] masking probabilities; valid: [B, T] bool (False where the data has no value);
    token_group: [T] long, the masking modality of each token.

    Each token t of sample b is masked independently with probability p[b, token_group[t]]
    (kept iff u >= p with u ~ U[0,1), so p = 0 always keeps and p = 1 always masks). Invalid
    tokens are never kept. If a sample with at least one valid token ends with none kept, ONE of
    its valid tokens, chosen uniformly at random, is unmasked (so the model always sees
    something; the tokens already masked are not redrawn). Samples without any valid token stay
    empty. Random numbers are drawn on the generator's device; the result is on p's device.
    """
    device = p.device
    valid = valid.to(device=device, dtype=torch.bool)
    token_group = token_group.to(device=device, dtype=torch.long)
    b, t = valid.shape
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand((b, t), generator=generator, device=gen_device).to(device)
    keep = (u >= p[:, token_group]) & valid
    empty = (valid.any(dim=1) & ~keep.any(dim=1)).nonzero().squeeze(1)
    if empty.numel():
        # argmax of uniform scores restricted to valid tokens = a uniformly chosen valid token
        score = torch.rand((empty.numel(), t), generator=generator, device=gen_device).to(device)
        score = score.masked_fill(~valid[empty], -1.0)
        keep[empty, score.argmax(dim=1)] = True
    return keep


def mean_mask_rate(p: torch.Tensor) -> torch.Tensor:
    """Mean drawn masking probability per modality, [M] float32 (the `p_<m>` columns of metrics.csv)."""
    return p.detach().float().mean(dim=0).cpu()


def single_modality_counts(keep: torch.Tensor, token_group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[M] float: how many samples of the batch see exactly one modality, per modality.

    keep: [B, T] bool over the flat layout; a modality counts as visible with any one of its tokens
    kept. MIAM's promise on a weak modality alone rests on training inputs like these; the
    `alone_<m>` columns of metrics.csv report their share per epoch, for every strategy.
    """
    visible = torch.zeros(keep.shape[0], num_groups, device=keep.device)
    visible.index_add_(1, token_group.to(keep.device), keep.float())
    visible = visible > 0
    alone = visible.sum(dim=1) == 1
    return (visible & alone[:, None]).sum(dim=0).float().cpu()
