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


class PerTokenLinear(nn.Module):
    """Tabular: each token (variable) has its own linear map F -> d (value * w_t + b_t when F = 1)."""

    def __init__(self, tokens: int, features: int, d_model: int) -> None:
        super().__init__()
        # Same scale as nn.Linear's default init, so tabular tokens start comparable to the others.
        bound = features ** -0.5
        self.weight = nn.Parameter(torch.empty(tokens, features, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(tokens, d_model).uniform_(-bound, bound))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.weight.shape[1] == 1:  # the common case: skip the [n, F, d] gather of a matmul
            return x * self.weight[t, 0] + self.bias[t]
        return torch.einsum("nf,nfd->nd", x, self.weight[t]) + self.bias[t]


class SharedLinear(nn.Linear):
    """Image sub-patches, years of a cube, audio frames: one projection F -> d for all tokens."""

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
        return PerTokenLinear(mod.tokens, mod.features, d_model)
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
