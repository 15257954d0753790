"""The token-dropping transformer (`MiamModel`) and the mask-token baseline (`MaskTokenModel`).

`MiamModel` follows MAE: masked tokens are *dropped*. Only the kept tokens are tokenized, and the
encoder runs on them alone, so its cost follows the visible tokens, not all tokens.

Packing with length buckets. MIAM's corner draws put nearly-empty and nearly-full samples in the
same batch, so padding every sample to the batch's longest would give much of the saving back.
Samples are sorted by visible count and cut into at most `buckets` contiguous runs of that order;
each run is an [n, L] grid padded to its own longest sample (CLS first, then the sample's visible
tokens in layout order), and all grids lie back to back in one flat buffer of [cells, d] rows. The
token-wise layers (norms, projections, MLP) run on that buffer in one call each; attention runs per
grid through `scaled_dot_product_attention` with a boolean key-padding mask. The cut points are
those that minimise the encoder's work including padding, sum over runs of n * L * ((2 + r) d + L)
(token-wise cost ~ (4 + 2r) d^2 per cell with r = mlp_ratio, attention ~ 2 d L), found exactly by a
small dynamic programme over the distinct counts (`bucket_bounds`). On the demo's batches under
MIAM masks there are 18% more cells than visible tokens + CLS with 4 buckets (the default, as in
recipes), 3% with 16 and 102% with one. Attention never crosses
samples and padded keys are masked, so the output does not depend on the bucketing (up to float
rounding): the bucket count only changes cost. Pooling (CLS, or mean over CLS + visible tokens)
reads the same grids. Padding cells start at zero and stay finite. Everything is plain indexing
and dense kernels: deterministic on CPU, no nested tensors.

`MaskTokenModel` is the baseline that MaskSDM uses: every token is tokenized, masked ones get their
content replaced by a learned mask token (position and modality embeddings kept), and the encoder
runs on the full length. It shares the tokenizers, encoder, pooling and head with `MiamModel`: its
batch is simply one bucket with no padding and no attention mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miam_cli.model.layout import TokenLayout
from miam_cli.model.tokenizers import ModalityTokenizer

POOLINGS = ("cls", "mean")
# The recipes' `model.buckets` default, which docs/results.md was trained with. Measured on the demo (3000
# surveys, CPU, one thread): 16 buckets pad 3% instead of 18% and a forward+backward step took ~11% less
# time, but the validation AUC moves with the float rounding, so changing it means regenerating the results.
DEFAULT_BUCKETS = 4


def bucket_bounds(sorted_counts: np.ndarray, max_buckets: int, token_cost: float = 0.0) -> list[tuple[int, int]]:
    """Cut samples sorted by visible count (ascending) into <= max_buckets contiguous runs [i0, i1).

    Minimises the encoder's work including padding, sum over runs of n x L x (token_cost + L), with
    L = the run's longest count + 1 (CLS): n x L cells each cost `token_cost` (norms, projections,
    MLP) plus L for attending to L keys. Cuts only ever fall between distinct counts, so the exact DP
    runs over the U distinct counts (U <= T_total + 1) in O(K U^2), vectorised: negligible next to a
    training step.
    """
    n = len(sorted_counts)
    if n == 0:
        return []
    uniq = np.unique(sorted_counts)
    k = max(1, min(max_buckets, len(uniq)))
    if k == 1:
        return [(0, n)]
    # Positions 0..U: ends[j] = samples with count <= uniq[j-1]; a run from position i to j holds
    # samples ends[i]:ends[j] and is padded to uniq[j-1] + 1.
    ends = np.concatenate([[0], np.searchsorted(sorted_counts, uniq, side="right")]).astype(np.float64)
    width = np.concatenate([[0.0], uniq + 1.0])
    size = ends[None, :] - ends[:, None]
    run_cost = np.where(size > 0, size * width[None, :] * (token_cost + width[None, :]), np.inf)
    best = np.full(len(ends), np.inf)
    best[0] = 0.0
    back = []
    for _ in range(k):  # best[j] after r rounds: cheapest cover of positions 0..j by exactly r runs
        total = best[:, None] + run_cost
        back.append(total.argmin(axis=0))
        best = total.min(axis=0)
    cuts, j = [n], len(ends) - 1
    for arg in reversed(back):
        j = int(arg[j])
        cuts.append(int(ends[j]))
    cuts = cuts[::-1]
    return list(zip(cuts[:-1], cuts[1:]))


@dataclass
class Bucket:
    """A run of samples attended together as one [n, L] grid (L = its longest sample + CLS)."""

    n: int
    length: int
    attend: Tensor | None  # [n, L] bool: keys attention may use; None: all of them
    pool: Tensor  # [n, L] bool: cells that mean pooling averages (CLS + visible tokens)


@dataclass
class Packing:
    """A batch laid out as its buckets' grids, back to back in one flat buffer of [cells, d] rows."""

    buckets: list[Bucket]
    restore: Tensor | None  # pooled outputs (bucket order) -> batch order; None: already in order

    def grids(self, buffer: Tensor) -> list[Tensor]:
        """[cells, C] -> one [n, L, C] view per bucket."""
        pieces = buffer.split([b.n * b.length for b in self.buckets])
        return [piece.view(b.n, b.length, -1) for piece, b in zip(pieces, self.buckets)]


class EncoderBlock(nn.Module):
    """Pre-norm transformer block on the packed buffer; attention per bucket grid through SDPA."""

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

    def forward(self, x: Tensor, packing: Packing) -> Tensor:
        grids = packing.grids(self.qkv(self.norm1(x)))
        attended = torch.cat([self._attend(g, b).flatten(0, 1) for g, b in zip(grids, packing.buckets)])
        x = x + self.drop(self.proj(attended.flatten(1)))
        return x + self.drop(self.mlp(self.norm2(x)))

    def _attend(self, qkv: Tensor, bucket: Bucket) -> Tensor:
        """[n, L, 3d] -> [n, L, H, d/H] (a view of SDPA's output, which is laid out that way)."""
        n, length, d3 = qkv.shape
        q, k, v = qkv.view(n, length, 3, self.heads, d3 // (3 * self.heads)).permute(2, 0, 3, 1, 4)
        # Only keys are masked: padded query rows still see their CLS, so no row is all -inf.
        mask = None if bucket.attend is None else bucket.attend[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2)


class MiamModel(nn.Module):
    """Token-dropping multimodal transformer: `model(values, keep) -> logits [B, C]`."""

    model_type = "miam"
    drops_tokens = True  # encode() sees only kept tokens, so `encode_tokenized` may stand in for it

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
        buckets: int = DEFAULT_BUCKETS,
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
        if batch == 0:
            return self.cls_token.new_zeros(0, self.cls_token.shape[0])
        tokens, owner = self._visible_tokens(values, keep)
        return self._run(*self._pack(tokens, owner, batch))

    def tokenize(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every token embedded, {m: [B, T_m, d]}. A token's embedding depends on its value and index
        only, so callers that run the same samples under many masks (attribution) embed them once
        and call `encode_tokenized` per mask, instead of re-reading and re-projecting raw values."""
        out = {}
        for name, tokenizer in self.tokenizers.items():
            x = values[name]
            batch, count, features = x.shape
            t = torch.arange(count, device=x.device).repeat(batch)
            out[name] = tokenizer(x.reshape(batch * count, features), t).view(batch, count, -1)
        return out

    def encode_tokenized(self, embedded: Mapping[str, Tensor], rows: Tensor, keep: Mapping[str, Tensor]) -> Tensor:
        """`encode` from `tokenize`'s output: sample i of the result is sample rows[i] of `embedded`
        (rows may repeat) with keep[m][i] visible. Equals `encode` on the gathered raw values."""
        parts, owners = [], []
        for name in self.tokenizers:
            count = embedded[name].shape[1]
            flat = keep[name].reshape(-1).nonzero().squeeze(1)  # (i, t) pairs as i * T + t, in order
            owner = flat // count
            parts.append(embedded[name][rows[owner], flat % count])
            owners.append(owner)
        if len(rows) == 0:
            return self.cls_token.new_zeros(0, self.cls_token.shape[0])
        return self._run(*self._pack(torch.cat(parts), torch.cat(owners), len(rows)))

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
            x = values[name]
            flat = keep[name].reshape(-1).nonzero().squeeze(1)  # (b, t) pairs as b * T + t, in order
            parts.append(tokenizer(x.reshape(-1, x.shape[-1]).index_select(0, flat), flat % x.shape[1]))
            owners.append(flat // x.shape[1])
        return torch.cat(parts), torch.cat(owners)

    def _pack(self, tokens: Tensor, owner: Tensor, batch: int) -> tuple[Tensor, Packing]:
        """Scatter CLS + visible tokens into the bucket grids: samples fewest-visible first, each
        sample's grid row holding its CLS then its tokens in layout order, zeros after."""
        device = tokens.device
        counts = torch.bincount(owner, minlength=batch)
        order = torch.argsort(counts, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(batch, device=device)
        sorted_counts = counts[order]

        host_counts = sorted_counts.cpu().numpy()  # bucket bounds and sizes are decided on the host
        buckets, base, cells = [], [], 0
        token_cost = (2 + self.hparams["mlp_ratio"]) * tokens.shape[1]  # in units of attention per key
        for i0, i1 in bucket_bounds(host_counts, self.buckets, token_cost):
            length = int(host_counts[i1 - 1]) + 1
            base.append(cells + length * np.arange(i1 - i0))  # first cell of each sample's grid row
            cells += length * (i1 - i0)
            pool = torch.arange(length, device=device) <= sorted_counts[i0:i1, None]
            padded = host_counts[i0] != host_counts[i1 - 1]  # sorted: unpadded iff all counts equal
            buckets.append(Bucket(i1 - i0, length, pool if padded else None, pool))

        # A row's slot in its sample's grid row = its position among that sample's rows, CLS first:
        # CLS rows come first in the concatenation and the sort by rank is stable.
        rows = torch.cat([self.cls_token.to(tokens.dtype).expand(batch, -1), tokens])
        row_rank = rank[torch.cat([torch.arange(batch, device=device), owner])]
        position = torch.empty_like(row_rank)
        position[torch.argsort(row_rank, stable=True)] = torch.arange(len(rows), device=device)
        first = torch.cumsum(sorted_counts + 1, 0) - (sorted_counts + 1)  # first position per rank
        cell = torch.from_numpy(np.concatenate(base)).to(device)[row_rank] + position - first[row_rank]
        # Padding cells are zeros: finite through every layer, and never attended as keys.
        buffer = rows.new_zeros(cells, rows.shape[1]).index_copy_(0, cell, rows)
        return buffer, Packing(buckets, restore=rank)

    # ---- full-length path (reference and mask-token baseline) --------------------------------
    def _encode_full(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor], mask_token: Tensor | None) -> Tensor:
        """Every token through the tokenizers and the encoder, as one unpadded bucket. mask_token=None:
        masked tokens are hidden from attention (the reference); otherwise their content is replaced
        by it and everything is attended (the baseline). Pooling covers CLS + visible tokens."""
        parts = []
        for name, tokenizer in self.tokenizers.items():
            x = values[name]
            batch, count, features = x.shape
            t = torch.arange(count, device=x.device)
            content = tokenizer.content(x.reshape(batch * count, features), t.repeat(batch)).view(batch, count, -1)
            if mask_token is not None:
                content = torch.where(keep[name][..., None], content, mask_token.to(content.dtype))
            parts.append(content + tokenizer.context(t))
        x = torch.cat([self.cls_token.to(parts[0].dtype).expand(batch, 1, -1), *parts], dim=1)
        visible = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=x.device), self.layout.flatten_keep(keep)], 1)
        bucket = Bucket(batch, x.shape[1], attend=visible if mask_token is None else None, pool=visible)
        return self._run(x.reshape(-1, x.shape[-1]), Packing([bucket], restore=None))

    # ---- shared ------------------------------------------------------------------------------
    def _run(self, rows: Tensor, packing: Packing) -> Tensor:
        """Encoder + final norm + pooling -> [B, d] in batch order."""
        for block in self.blocks:
            rows = block(rows, packing)
        rows = self.norm(rows)
        pooled = torch.cat([self._pool(g, b.pool) for g, b in zip(packing.grids(rows), packing.buckets)])
        return pooled if packing.restore is None else pooled.index_select(0, packing.restore)

    def _pool(self, grid: Tensor, pool: Tensor) -> Tensor:
        """CLS, or the mean over CLS + visible tokens (so it is defined when nothing is visible)."""
        if self.pooling == "cls":
            return grid[:, 0]
        weight = pool.to(grid.dtype).unsqueeze(-1)
        return (grid * weight).sum(1) / weight.sum(1)

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
    drops_tokens = False  # masked tokens enter as the mask token: `encode_tokenized` does not apply

    def __init__(self, layout: TokenLayout, num_classes: int, **kwargs: Any) -> None:
        super().__init__(layout, num_classes, **kwargs)
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(self.hparams["d_model"]), std=0.02))

    def encode(self, values: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Tensor:
        self._check(values, keep)
        return self._encode_full(values, keep, mask_token=self.mask_token)


MODEL_TYPES: dict[str, type[MiamModel]] = {cls.model_type: cls for cls in (MiamModel, MaskTokenModel)}
