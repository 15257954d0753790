"""The token-dropping transformer (`MiamModel`) and the mask-token baseline (`MaskTokenModel`).

`MiamModel` follows MAE: masked tokens are *dropped*. Only the kept tokens are tokenized; each
sample's visible tokens are packed after a CLS token, padded, and padding is excluded from attention
and pooling by a key-padding mask. Cost therefore follows the visible tokens, not all tokens.

Length buckets. MIAM's corner draws put nearly-empty and nearly-full samples in the same batch, so
padding every sample to the batch's longest would give most of the saving back. Samples are sorted
by visible count and cut into at most `buckets` contiguous runs of that order; the cut points are
the ones that minimise the number of (padded) token slots the encoder processes, found exactly by a
small dynamic programme over the distinct counts (`bucket_bounds`). Each run is encoded padded to its
own longest sample and the pooled outputs are put back in batch order. Attention never crosses
samples and padding is masked, so the result does not depend on the bucketing (up to float
rounding): the bucket count only changes cost.

`MaskTokenModel` is the baseline that MaskSDM uses: every token is tokenized, masked ones get their
content replaced by a learned mask token (position and modality embeddings kept), and the encoder
runs on the full length. It shares the tokenizers, encoder, pooling and head with `MiamModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam_cli.model.layout import TokenLayout
from miam_cli.model.tokenizers import ModalityTokenizer

POOLINGS = ("cls", "mean")


def bucket_bounds(sorted_counts: np.ndarray, max_buckets: int) -> list[tuple[int, int]]:
    """Cut samples sorted by visible count (ascending) into <= max_buckets contiguous runs [i0, i1).

    Minimises sum over runs of (#samples) x (longest count + 1 for CLS): the token slots the encoder
    processes. Cuts only ever fall between distinct counts, so the exact DP runs over the U distinct
    counts (U <= T_total + 1) in O(K U^2), vectorised: negligible next to a training step.
    """
    n = len(sorted_counts)
    if n == 0:
        return []
    uniq = np.unique(sorted_counts)
    k = max(1, min(max_buckets, len(uniq)))
    if k == 1:
        return [(0, n)]
    # ends[j]: samples with count <= uniq[j-1]; a run from position i to j covers ends[i]:ends[j].
    ends = np.concatenate([[0], np.searchsorted(sorted_counts, uniq, side="right")]).astype(np.float64)
    width = np.concatenate([[0.0], uniq + 1.0])  # padded length of a run ending at position j (>= 1)
    size = ends[None, :] - ends[:, None]  # size[i, j]: samples in the run from position i to j
    run_cost = np.where(size > 0, size * width[None, :], np.inf)
    best = np.full(len(ends), np.inf)
    best[0] = 0.0
    back = []
    for _ in range(k):
        total = best[:, None] + run_cost
        back.append(total.argmin(axis=0))
        best = total.min(axis=0)
    cuts, j = [], len(ends) - 1
    for arg in reversed(back):
        cuts.append(int(ends[j]))
        j = int(arg[j])
    cuts.append(0)
    cuts = cuts[::-1]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; attention through SDPA with a boolean key mask (True = attend)."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attend: Tensor) -> Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Only keys are masked: padded query rows still see the CLS token, so no row is all -inf.
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(n, length, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class MiamModel(nn.Module):
    """Token-dropping multimodal transformer: `model(values, keep) -> logits [B, C]`."""

    model_type = "miam"

    def __init__(
        self,
        layout: TokenLayout,
        num_classes: int,
        d_model: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        pooling: str = "cls",
        buckets: int = 4,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")
        self.layout = layout
        self.hparams: dict[str, Any] = dict(
            num_classes=num_classes, d_model=d_model, depth=depth, heads=heads,
            mlp_ratio=mlp_ratio, dropout=dropout, pooling=pooling, buckets=buckets,
        )
        self.pooling, self.buckets = pooling, buckets
        self.tokenizers = nn.ModuleDict({m.name: ModalityTokenizer(m, d_model) for m in layout.modalities})
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(d_model), std=0.02))
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)  # pre-norm blocks leave the residual stream un-normalised
        self.head = nn.Linear(d_model, num_classes)

    # ---- public ------------------------------------------------------------------------------
    def forward(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        """values {m: [B, T_m, F_m]}, keep {m: [B, T_m] bool} -> logits [B, C]."""
        return self.head(self.encode(values, keep))

    def encode(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        """Pooled representation [B, d] from the kept tokens only."""
        batch = self._check(values, keep)
        tokens, owner = self._visible_tokens(values, keep)
        return self._encode_packed(tokens, owner, torch.bincount(owner, minlength=batch))

    def reference_forward(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        """Slow reference with the same weights: every token is tokenized and run at full length, and
        the dropped ones are excluded by the key-padding mask. Equals `forward` (tested)."""
        self._check(values, keep)
        return self.head(self._encode_full(values, keep, mask_token=None))

    def model_config(self) -> dict[str, Any]:
        """Plain JSON types only, so a checkpoint loads with `torch.load(weights_only=True)`."""
        return {"type": self.model_type, "layout": self.layout.to_dict(), **self.hparams}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> MiamModel:
        """Rebuild a model (either type, from config["type"]) from `model_config()`'s output."""
        config = dict(config)
        kind = config.pop("type", MiamModel.model_type)
        if kind not in MODEL_TYPES:
            raise ValueError(f"unknown model type {kind!r}; expected one of {sorted(MODEL_TYPES)}")
        return MODEL_TYPES[kind](TokenLayout.from_dict(config.pop("layout")), **config)

    # ---- token-dropping path -----------------------------------------------------------------
    def _visible_tokens(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Tokenize only the kept tokens: ([N_vis, d], owning sample [N_vis]), modality order then t.

        A modality with nothing kept still runs on zero rows, so its parameters get a zero gradient
        rather than none: DDP then needs no find_unused_parameters."""
        parts, owners = [], []
        for name, tokenizer in self.tokenizers.items():
            b, t = keep[name].nonzero(as_tuple=True)
            parts.append(tokenizer(values[name][b, t], t))
            owners.append(b)
        return torch.cat(parts), torch.cat(owners)

    def _encode_packed(self, tokens: Tensor, owner: Tensor, counts: Tensor) -> Tensor:
        batch, d = counts.numel(), tokens.shape[1]
        order = torch.argsort(counts, stable=True)  # samples, fewest visible tokens first
        rank = torch.empty_like(order)
        rank[order] = torch.arange(batch, device=order.device)
        # Tokens sorted by their sample's rank: each bucket's tokens become one contiguous slice;
        # the stable sort keeps a sample's tokens in layout order.
        token_order = torch.argsort(rank[owner], stable=True)
        tokens, token_rank = tokens[token_order], rank[owner][token_order]
        sorted_counts = counts[order]
        starts = torch.cumsum(sorted_counts, 0) - sorted_counts
        slot = torch.arange(len(tokens), device=tokens.device) - starts[token_rank] + 1  # 0 is CLS

        host_counts = sorted_counts.cpu().numpy()
        host_starts = np.concatenate([[0], np.cumsum(host_counts)])
        pooled = []
        for i0, i1 in bucket_bounds(host_counts, self.buckets):
            length = int(host_counts[i1 - 1]) + 1
            t0, t1 = int(host_starts[i0]), int(host_starts[i1])
            x = tokens.new_zeros(i1 - i0, length, d)
            x[:, 0] = self.cls_token
            x[token_rank[t0:t1] - i0, slot[t0:t1]] = tokens[t0:t1]
            attend = torch.arange(length, device=x.device) <= sorted_counts[i0:i1, None]
            pooled.append(self._run(x, attend))
        return torch.cat(pooled)[rank]

    # ---- full-length path (reference and mask-token baseline) --------------------------------
    def _encode_full(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor], mask_token: Tensor | None) -> Tensor:
        """Every token through the tokenizers and the encoder. mask_token=None: masked tokens are hidden
        from attention (the reference); otherwise their content is replaced by it and they are attended."""
        parts = []
        for name, tokenizer in self.tokenizers.items():
            x = values[name]
            batch, count, features = x.shape
            t = torch.arange(count, device=x.device)
            content = tokenizer.content(x.reshape(batch * count, features), t.repeat(batch)).view(batch, count, -1)
            if mask_token is not None:
                content = torch.where(keep[name][..., None], content, mask_token)
            parts.append(content + tokenizer.context(t))
        cls = self.cls_token.expand(batch, 1, -1).to(parts[0].dtype)
        x = torch.cat([cls, *parts], dim=1)
        visible = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=x.device), self.layout.flatten_keep(keep)], 1)
        attend = visible if mask_token is None else torch.ones_like(visible)
        return self._run(x, attend, pool=visible)

    # ---- shared ------------------------------------------------------------------------------
    def _run(self, x: Tensor, attend: Tensor, pool: Tensor | None = None) -> Tensor:
        """Encoder + final norm + pooling over `pool` (default: the attended positions) -> [n, d].
        Mean pooling includes CLS, so it is defined for a sample with nothing visible."""
        for block in self.blocks:
            x = block(x, attend)
        x = self.norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        weight = (attend if pool is None else pool).to(x.dtype).unsqueeze(-1)
        return (x * weight).sum(1) / weight.sum(1)

    def _check(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> int:
        """Shape checks naming the modality; returns the batch size."""
        batch = None
        for m in self.layout.modalities:
            if m.name not in values or m.name not in keep:
                raise ValueError(f"modality {m.name!r} is missing from the model's values or keep")
            v, k = values[m.name], keep[m.name]
            batch = v.shape[0] if batch is None else batch
            if tuple(v.shape) != (batch, m.tokens, m.features) or tuple(k.shape) != (batch, m.tokens):
                raise ValueError(
                    f"modality {m.name!r}: expected values [{batch}, {m.tokens}, {m.features}] and keep "
                    f"[{batch}, {m.tokens}], got {list(v.shape)} and {list(k.shape)}"
                )
            if k.dtype != torch.bool:
                raise ValueError(f"modality {m.name!r}: keep must be bool, got {k.dtype}")
        return int(batch)


class MaskTokenModel(MiamModel):
    """Baseline (MaskSDM's way): all tokens are encoded, masked ones as a learned mask token."""

    model_type = "mask-token"

    def __init__(self, layout: TokenLayout, num_classes: int, **kwargs: Any) -> None:
        super().__init__(layout, num_classes, **kwargs)
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(self.hparams["d_model"]), std=0.02))

    def encode(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        self._check(values, keep)
        return self._encode_full(values, keep, mask_token=self.mask_token)


MODEL_TYPES: dict[str, type[MiamModel]] = {cls.model_type: cls for cls in (MiamModel, MaskTokenModel)}
