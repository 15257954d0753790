"""Per-modality tokenizers: token values -> d_model vectors, plus axis and modality embeddings.

Every tokenizer works on a flat list of tokens (`x` [n, F] with their token indices `t` [n]), so the
token-dropping model hands it the visible tokens only and its cost follows them; the mask-token
baseline hands it every token. A token's vector is

    content(x, t) + sum over axes a of E_a[index of t on a] + modality embedding

where `content` depends on the modality's kind (`_CONTENT` below).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from miam_cli.model.layout import ModalityLayout


class GroupedLinear(nn.Module):
    """One linear map F -> d per group of tokens: per variable for tabular data (value * w_t + b_t
    when F = 1), per band for image sub-patches. A per-band projection lets the pooled tokens keep
    bands apart linearly (red minus NIR), which a shared projection plus an additive band embedding
    can only reach through the MLPs: NDVI-like signals are learned far sooner."""

    def __init__(self, group_of_token: Tensor, features: int, d_model: int) -> None:
        super().__init__()
        groups = int(group_of_token.max()) + 1
        bound = features ** -0.5  # nn.Linear's default init scale
        self.weight = nn.Parameter(torch.empty(groups, features, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, d_model).uniform_(-bound, bound))
        self.register_buffer("group", group_of_token.long(), persistent=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        g = self.group[t]
        if self.weight.shape[1] == 1:  # the common tabular case: skip the [n, F, d] gather of a matmul
            return x * self.weight[g, 0] + self.bias[g]
        if self.weight.shape[0] > 16:  # many groups of wide tokens: one gathered einsum
            return torch.einsum("nf,nfd->nd", x, self.weight[g]) + self.bias[g]
        out = x.new_empty(x.shape[0], self.weight.shape[2])
        for k in range(self.weight.shape[0]):  # a few groups (bands): one matmul each, no gather
            rows = (g == k).nonzero().squeeze(1)
            out = out.index_copy(0, rows, x.index_select(0, rows) @ self.weight[k] + self.bias[k])
        return out


class SharedLinear(nn.Linear):
    """Years of a cube, audio frames, images without bands: one projection F -> d for all tokens."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:  # noqa: ARG002 - same call as the others
        return super().forward(x)


class SmallMLP(nn.Module):
    """Precomputed embeddings and coordinates: a non-linear map, since they are not raw values."""

    def __init__(self, features: int, d_model: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:  # noqa: ARG002
        return self.net(x)


def _content(mod: ModalityLayout, d_model: int) -> nn.Module:
    if mod.kind == "tabular":
        return GroupedLinear(torch.arange(mod.tokens), mod.features, d_model)
    if mod.kind == "image" and "band" in mod.axes:
        return GroupedLinear(torch.from_numpy(mod.axis_index("band")), mod.features, d_model)
    if mod.kind in ("image", "timeseries", "audio"):
        return SharedLinear(mod.features, d_model)
    return SmallMLP(mod.features, d_model)  # embedding, location


class ModalityTokenizer(nn.Module):
    """Content projection + per-axis position embeddings + a modality embedding for one modality."""

    def __init__(self, mod: ModalityLayout, d_model: int) -> None:
        super().__init__()
        self.content = _content(mod, d_model)
        self.axis_embed = nn.ModuleList(nn.Embedding(n, d_model) for n in mod.axis_shape)
        self.modality_embed = nn.Parameter(torch.zeros(d_model))
        for emb in self.axis_embed:
            nn.init.trunc_normal_(emb.weight, std=0.02)
        nn.init.trunc_normal_(self.modality_embed, std=0.02)
        # [n_axes, T]: token t's index on each axis; derived from the layout, so not saved.
        index = torch.stack([torch.from_numpy(mod.axis_index(a)) for a in mod.axes])
        self.register_buffer("axis_index", index, persistent=False)

    def context(self, t: Tensor) -> Tensor:
        """[n, d]: what a token at index t carries besides its values (position + modality)."""
        pos = sum(emb(self.axis_index[a, t]) for a, emb in enumerate(self.axis_embed))
        return pos + self.modality_embed

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x [n, F] values of n tokens, t [n] their token indices -> [n, d]."""
        return self.content(x, t) + self.context(t)
