"""miam_cli.model: layout, tokenizers, the token-dropping transformer, the mask-token baseline, losses."""

from __future__ import annotations

import io
import json

import pytest
import torch

from miam_cli.model import (
    MaskTokenModel, MiamModel, ModalityLayout, TokenLayout, bucket_bounds, make_loss, positive_class_weights,
)

B = 7


def small_layout() -> TokenLayout:
    """Every tokenizer kind, a multi-axis modality, and a group holding two store modalities."""
    return TokenLayout(
        (
            ModalityLayout("tabular", "tabular", 5, 1, {"variable": [f"bio{i}" for i in range(5)]}, 0),
            ModalityLayout("sentinel2", "image", 8, 6, {"band": ["red", "nir"], "patch": ["a", "b", "c", "d"]}, 1),
            ModalityLayout("landsat", "timeseries", 4, 3, {"year": [2000, 2001, 2002, 2003]}, 2),
            ModalityLayout("emb", "embedding", 1, 7, {}, 2),
            ModalityLayout("multi", "tabular", 3, 2, {"variable": ["x", "y", "z"]}, 0),
        ),
        ("tabular", "sentinel2", "timeseries"),
    )


def make_batch(layout: TokenLayout, seed: int = 0, batch: int = B) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    values = {m.name: torch.randn(batch, m.tokens, m.features, generator=g) for m in layout.modalities}
    keep = {m.name: torch.rand(batch, m.tokens, generator=g) < 0.5 for m in layout.modalities}
    for k in keep.values():
        k[0] = False  # sample 0: nothing visible (CLS only)
        k[1] = True   # sample 1: everything visible
    return values, keep


def make_model(cls=MiamModel, pooling: str = "cls", seed: int = 0, **kw) -> MiamModel:
    torch.manual_seed(seed)
    return cls(small_layout(), num_classes=3, d_model=16, depth=2, heads=4, pooling=pooling, **kw).eval()


# ---- layout ---------------------------------------------------------------------------------------

def test_layout_round_trip_and_flat_order():
    layout = small_layout()
    d = json.loads(json.dumps(layout.to_dict()))
    assert TokenLayout.from_dict(d) == layout
    assert layout.total_tokens == 21 and layout.offsets == (0, 5, 13, 17, 18, 21)
    assert layout.token_group.tolist() == [0] * 5 + [1] * 8 + [2] * 5 + [0] * 3
    assert layout["sentinel2"].axis_index("patch").tolist() == [0, 1, 2, 3] * 2
    assert layout["emb"].axes == {"token": [0]}
    _, keep = make_batch(layout)
    flat = layout.flatten_keep(keep)
    assert flat.shape == (B, 21)
    assert all(torch.equal(keep[n], v) for n, v in layout.split_flat(flat).items())


def test_layout_rejects_bad_axes_and_groups():
    with pytest.raises(ValueError, match="give 6 tokens"):
        ModalityLayout("s2", "image", 8, 4, {"band": [1, 2], "patch": [1, 2, 3]})
    with pytest.raises(ValueError, match="no modality"):
        TokenLayout((ModalityLayout("a", "tabular", 1, 1, {}, 0),), ("a", "b"))


def test_layout_from_store_specs_with_groups():
    specs = {m.name: m for m in small_layout().modalities}
    layout = TokenLayout.from_specs(specs, {"tab": ["tabular"], "ts": ["landsat", "emb"]})
    assert layout.names == ["tabular", "landsat", "emb"] and layout.group_names == ("tab", "ts")
    assert [m.group for m in layout.modalities] == [0, 1, 1]


# ---- token dropping == masking in attention --------------------------------------------------------

@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_dropping_equals_key_padding_reference(pooling):
    model = make_model(pooling=pooling)
    values, keep = make_batch(model.layout)
    with torch.no_grad():
        out = model(values, keep)
        ref = model.reference_forward(values, keep)
        # The dropped tokens' values must not matter at all.
        noisy = {n: torch.where(keep[n][..., None], v, v + 100.0) for n, v in values.items()}
        out_noisy = model(noisy, keep)
    assert out.shape == (B, 3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_noisy, out, atol=1e-5, rtol=0)


def test_encode_tokenized_equals_encode_on_gathered_samples():
    # attribution embeds a split once and runs it under many masks: sample i is rows[i] (repeats allowed)
    model = make_model(pooling="mean").eval()
    values, keep = make_batch(model.layout, seed=2)
    rows = torch.tensor([3, 0, 3, 5, 1, 1])
    masks = make_batch(model.layout, seed=9)[1]
    keep_rows = {n: k[: len(rows)] for n, k in masks.items()}
    with torch.no_grad():
        direct = model.encode({n: v[rows] for n, v in values.items()}, keep_rows)
        via_tokens = model.encode_tokenized(model.tokenize(values), rows, keep_rows)
    torch.testing.assert_close(via_tokens, direct, atol=1e-5, rtol=0)
    assert model.drops_tokens and not MaskTokenModel.drops_tokens


def test_dropping_gradients_equal_reference_gradients():
    model = make_model(pooling="mean").train()
    values, keep = make_batch(model.layout, seed=4)
    grads = []
    for fn in (model, model.reference_forward):
        model.zero_grad()
        fn(values, keep).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_bucketing_does_not_change_output():
    model = make_model()
    values, keep = make_batch(model.layout, seed=3, batch=16)
    outs = []
    with torch.no_grad():
        for buckets in (1, 2, 5, 64):
            model.buckets = buckets
            outs.append(model(values, keep))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=0)


def test_bucket_bounds_cover_batch_and_cut_padding():
    counts = torch.tensor([0, 0, 1, 1, 2, 30, 31, 31]).numpy()
    assert bucket_bounds(counts, 1) == [(0, 8)]
    bounds = bucket_bounds(counts, 2)
    assert bounds == [(0, 5), (5, 8)]  # the nearly-empty samples are not padded to 31
    assert bucket_bounds(counts[:0], 3) == []


def test_batch_permutation_and_independence():
    model = make_model(pooling="mean")
    values, keep = make_batch(model.layout, seed=1)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(values, keep)
        out_perm = model({n: v[perm] for n, v in values.items()}, {n: k[perm] for n, k in keep.items()})
        alone = torch.cat([model({n: v[i:i + 1] for n, v in values.items()}, {n: k[i:i + 1] for n, k in keep.items()})
                           for i in range(B)])
    torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, out, atol=1e-5, rtol=0)


def test_gradients_reach_kept_modalities_only():
    model = make_model()
    values, keep = make_batch(model.layout, seed=2)
    keep["landsat"].zero_()  # nothing of landsat kept in the whole batch
    model(values, keep).sum().backward()

    def grad_norm(name):
        grads = [p.grad for p in model.tokenizers[name].parameters()]
        return sum(0.0 if g is None else g.abs().sum().item() for g in grads)

    assert grad_norm("landsat") == 0.0
    assert all(grad_norm(n) > 0 for n in ("tabular", "sentinel2", "emb", "multi"))
    # Per-token tabular weights: only tokens kept somewhere in the batch get a gradient.
    kept_anywhere = keep["tabular"].any(0)
    w_grad = model.tokenizers["tabular"].content.weight.grad.abs().sum((1, 2))
    assert torch.equal(w_grad > 0, kept_anywhere)


def test_cls_only_sample_is_valid():
    model = make_model()
    values, keep = make_batch(model.layout)
    nothing = {n: torch.zeros_like(k) for n, k in keep.items()}
    with torch.no_grad():
        out = model(values, nothing)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out[:1].expand_as(out))  # nothing visible: same output for all


# ---- mask-token baseline ---------------------------------------------------------------------------

def test_mask_token_model_shares_weights_and_uses_mask_token():
    miam, base = make_model(), make_model(MaskTokenModel)
    assert set(base.state_dict()) - set(miam.state_dict()) == {"mask_token"}
    values, keep = make_batch(base.layout)
    with torch.no_grad():
        out = base(values, keep)
        noisy = {n: torch.where(keep[n][..., None], v, v + 100.0) for n, v in values.items()}
        torch.testing.assert_close(base(noisy, keep), out, atol=1e-5, rtol=0)  # masked values unused
        base.mask_token.add_(torch.randn(16))  # (a constant shift would vanish in LayerNorm)
        assert not torch.allclose(base(values, keep), out)  # ... but the mask token is attended


# ---- config, checkpoints, determinism --------------------------------------------------------------

@pytest.mark.parametrize("cls", [MiamModel, MaskTokenModel])
def test_config_round_trip_through_weights_only_checkpoint(cls):
    model = make_model(cls, pooling="mean", buckets=3)
    buf = io.BytesIO()
    torch.save({"config": model.model_config(), "state": model.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    json.dumps(ckpt["config"])  # plain JSON types only
    rebuilt = MiamModel.from_config(ckpt["config"])
    rebuilt.load_state_dict(ckpt["state"])
    rebuilt.eval()
    assert type(rebuilt) is cls and rebuilt.model_config() == model.model_config()
    values, keep = make_batch(model.layout)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(values, keep), model(values, keep), atol=0, rtol=0)


def test_same_seed_same_weights_and_outputs():
    a, b = make_model(seed=5).train(), make_model(seed=5).train()
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    values, keep = make_batch(a.layout)
    assert torch.equal(a(values, keep), b(values, keep))
    assert not torch.equal(make_model(seed=6).head.weight, a.head.weight)


def test_bad_inputs_name_the_modality():
    model = make_model()
    values, keep = make_batch(model.layout)
    values["sentinel2"] = values["sentinel2"][:, :, :5]
    with pytest.raises(ValueError, match="sentinel2"):
        model(values, keep)
    with pytest.raises(ValueError, match="divisible"):
        MiamModel(small_layout(), 3, d_model=10, heads=4)


# ---- losses ---------------------------------------------------------------------------------------

def test_losses():
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float32)
    w = positive_class_weights(targets, clip=2.0)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 2.0]))  # (3/3, 4/2 -> 2, 5/1 clipped to 2)
    logits = torch.zeros(4, 3)
    bce = make_loss("multilabel", w)(logits, targets)
    assert torch.isclose(bce, torch.tensor(0.6931) * (targets * w + (1 - targets)).mean(), atol=1e-4)
    ce = make_loss("multiclass")(logits, torch.tensor([0, 1, 2, 0]))
    assert torch.isclose(ce, torch.log(torch.tensor(3.0)))
    with pytest.raises(ValueError, match="multilabel"):
        make_loss("regression")


def test_empty_batch():
    model = make_model()
    values, keep = make_batch(model.layout)
    out = model({n: v[:0] for n, v in values.items()}, {n: k[:0] for n, k in keep.items()})
    assert out.shape == (0, 3)
