"""The token store: round trip, normalisation from train only, NaN faults, resume, shards, info."""

import json

import numpy as np
import pandas as pd
import pytest
import zarr

from miam_cli.cli.main import main
from miam_cli.data.prepare import run_prepare
from miam_cli.errors import UserError
from miam_cli.store.reader import TokenStore
from miam_cli.store.schema import ModalitySpec, TaskSpec
from miam_cli.shards import parse_shard
from miam_cli.store.writer import ChunkData, StorePlan, StoreWriter


def _plan(n=50, seed=0):
    rng = np.random.default_rng(seed)
    samples = pd.DataFrame({
        "sample_id": [f"id{i}" for i in range(n)],
        "split": np.where(np.arange(n) % 5 == 0, "test", np.where(np.arange(n) % 5 == 1, "val", "train")),
        "lon": rng.uniform(0, 1, n), "lat": rng.uniform(0, 1, n),
        "labels": [np.array([i % 3], dtype=np.int32) for i in range(n)],
    })
    classes = pd.DataFrame({"class_index": [0, 1, 2], "original_id": ["a", "b", "c"], "name": ["A", "B", "C"]})
    specs = {
        "img": ModalitySpec(kind="image", tokens=4, features=3, dtype="float32", axes={"band": ["red", "nir"], "patch": ["r0c0", "r0c1"]}),
        "tab": ModalitySpec(kind="tabular", tokens=2, features=1, axes={"variable": ["bio1", "bio2"]}),
    }
    values = {"img": rng.normal(5, 2, size=(n, 4, 3)).astype(np.float32), "tab": rng.normal(size=(n, 2, 1)).astype(np.float32)}
    valid = {"img": rng.random((n, 4)) > 0.2, "tab": np.ones((n, 2), bool)}
    plan = StorePlan("test", TaskSpec(type="multiclass", num_classes=3, metric="top1"), specs, samples, classes,
                     normalization_scope={"img": "token", "tab": "feature"})
    return plan, values, valid


def _decoder(values, valid, calls=None):
    def decode(rows):
        if calls is not None:
            calls.append(rows.start)
        sl = slice(rows.start, rows.stop)
        return ChunkData({m: v[sl] for m, v in values.items()}, {m: v[sl] for m, v in valid.items()})
    return decode


def test_round_trip_and_normalisation(tmp_path):
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=16)
    store = TokenStore(tmp_path / "s")
    idx = np.arange(50)
    raw, ok = store.read("img", idx, normalize=False)
    np.testing.assert_array_equal(ok, valid["img"])
    np.testing.assert_allclose(raw[ok], values["img"][ok])
    assert (raw[~ok] == 0).all()
    # normalisation: per token, from train rows' valid tokens only
    train = (plan.samples["split"] == "train").to_numpy()
    for t in range(4):
        sel = values["img"][train & valid["img"][:, t], t]
        assert store.meta.modalities["img"].normalization.mean[t] == pytest.approx(sel.mean(), rel=1e-6)
        assert store.meta.modalities["img"].normalization.std[t] == pytest.approx(sel.std(), rel=1e-5)
    norm, _ = store.read("img", idx)
    spec = store.meta.modalities["img"].normalization
    expected = (values["img"] - np.array(spec.mean)[None, :, None]) / np.array(spec.std)[None, :, None]
    np.testing.assert_allclose(norm[ok], expected[ok], rtol=1e-5, atol=1e-6)
    # feature-scope statistics for the tabular modality
    tab_mean = store.meta.modalities["tab"].normalization.mean
    assert len(tab_mean) == 1 and tab_mean[0] == pytest.approx(values["tab"][train].mean(), rel=1e-5)
    # labels and presence flags
    np.testing.assert_array_equal(store.targets(idx), np.arange(50) % 3)
    np.testing.assert_array_equal(store.samples["has_img"], valid["img"].any(1))
    assert store.meta.splits == {"train": 30, "val": 10, "test": 10}
    assert store.meta.modalities["img"].axis_index("band").tolist() == [0, 0, 1, 1]
    assert zarr.open_group(tmp_path / "s" / "tokens.zarr", mode="r")["img"]["values"].chunks[0] == 16


def test_a_split_is_read_block_by_block_with_the_same_values(tmp_path, monkeypatch):
    """Large splits are decoded a block of rows at a time and normalised in place (peak memory: one
    float32 copy); the values are those of one whole read, to the bit, in any row order."""
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=16)
    store = TokenStore(tmp_path / "s")
    idx = np.random.default_rng(1).permutation(50)
    whole, ok = store.read("img", idx)
    monkeypatch.setattr("miam_cli.store.reader.READ_BLOCK_BYTES", 4 * 3 * 4 * 7)  # 7 rows a block
    blocks, ok_blocks = store.read("img", idx)
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(ok_blocks, ok)
    spec = store.meta.modalities["img"].normalization
    expected = (values["img"][idx] - np.float32(spec.mean)[None, :, None]) / np.float32(spec.std)[None, :, None]
    np.testing.assert_array_equal(blocks[ok], expected[ok])  # in place gives the same float32 arithmetic
    assert store.read("img", idx[:0])[0].shape == (0, 4, 3)


def test_nan_tokens_become_missing_and_are_counted(tmp_path):
    plan, values, valid = _plan()
    values["img"][3, 1, 0] = np.nan
    valid["img"][3, 1] = True
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=16)
    store = TokenStore(tmp_path / "s")
    _, ok = store.read("img", [3])
    assert not ok[0, 1]
    report = json.loads((tmp_path / "s" / "prepare-report.json").read_text())
    assert report["counts"] == {"nan_values": 1}
    assert report["faults"][0]["sample"] == "id3"
    with pytest.raises(UserError, match="--strict"):
        run_prepare(plan, _decoder(values, valid), tmp_path / "strict", chunk_size=16, strict=True)
    assert not (tmp_path / "strict" / "store.json").exists()


def test_resume_after_crash_gives_the_same_store(tmp_path):
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "ref", chunk_size=8)
    calls = []
    _crash_before_chunk(2, plan, values, valid, tmp_path / "s")
    assert not (tmp_path / "s" / "store.json").exists()
    with pytest.raises(UserError, match="unfinished prepare"):
        TokenStore(tmp_path / "s")
    run_prepare(plan, _decoder(values, valid, calls), tmp_path / "s", chunk_size=8)
    assert calls == [16, 24, 32, 40, 48]  # chunks 0 and 1 were not decoded again
    _assert_same_store(tmp_path / "ref", tmp_path / "s")


def _crash_before_chunk(crash_at: int, plan, values, valid, store) -> None:
    """A prepare (chunks of 8) interrupted as it is about to write chunk `crash_at`."""
    original = StoreWriter.write_chunk

    def crashing(self, chunk, data):
        if chunk == crash_at:
            raise KeyboardInterrupt("injected crash")
        return original(self, chunk, data)

    StoreWriter.write_chunk = crashing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_prepare(plan, _decoder(values, valid), store, chunk_size=8)
    finally:
        StoreWriter.write_chunk = original


def test_two_shards_give_the_same_store_as_one_run(tmp_path):
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "ref", chunk_size=8)
    first = run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=8, shard=(0, 2))
    assert first.meta is None and first.chunks_pending_elsewhere == 3
    second = run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=8, shard=(1, 2))
    assert second.meta is not None
    _assert_same_store(tmp_path / "ref", tmp_path / "s")


def test_a_different_plan_is_refused_on_resume(tmp_path):
    plan, values, valid = _plan()
    StoreWriter(tmp_path / "s", plan, chunk_size=8).begin()
    other, _, _ = _plan(n=40)
    with pytest.raises(UserError, match="different data or settings"):
        StoreWriter(tmp_path / "s", other, chunk_size=8).begin()


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(UserError):
            parse_shard(bad)


def test_store_info_json_and_errors(tmp_path, capsys):
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=16)
    with pytest.raises(SystemExit) as e:
        main(["store", "info", str(tmp_path / "s"), "--json"])
    assert e.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 50 and info["splits"]["test"] == 10
    mods = {m["name"]: m for m in info["modalities"]}
    assert mods["img"]["tokens"] == 4 and mods["img"]["axes"]["band"]["size"] == 2
    assert mods["img"]["missing_rate"] == pytest.approx(1 - valid["img"].any(1).mean())
    with pytest.raises(SystemExit) as e:
        main(["store", "info", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert "not a token store" in capsys.readouterr().err


def _assert_same_store(a, b):
    sa, sb = TokenStore(a), TokenStore(b)
    pd.testing.assert_frame_equal(sa.samples, sb.samples)
    ma, mb = sa.meta.model_dump(), sb.meta.model_dump()
    ma["provenance"].pop("created"), mb["provenance"].pop("created")
    assert ma == mb
    for m in sa.modalities:
        va, oa = sa.read(m, np.arange(sa.meta.num_samples), normalize=False)
        vb, ob = sb.read(m, np.arange(sb.meta.num_samples), normalize=False)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(oa, ob)
    assert json.loads((a / "prepare-report.json").read_text()) == json.loads((b / "prepare-report.json").read_text())


def test_a_resumed_prepare_counts_the_faults_of_the_runs_it_resumes(tmp_path):
    """The warning after a resumed prepare is about the whole store, not only the chunks of this run."""
    plan, values, valid = _plan()
    for row in (3, 40):  # one NaN fault in chunk 0, one in chunk 5
        values["img"][row, 1, 0], valid["img"][row, 1] = np.nan, True
    _crash_before_chunk(2, plan, values, valid, tmp_path / "s")
    result = run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=8)
    assert result.chunks_written == 5 and result.faults == 2  # the first fault was met by the interrupted run


def test_chunk_size_is_capped_at_the_samples_and_absurd_sizes_are_refused(tmp_path):
    plan, values, valid = _plan()
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=1 << 20)
    assert zarr.open_group(tmp_path / "s" / "tokens.zarr", mode="r")["img"]["values"].chunks[0] == 50
    big = plan.modalities["img"].model_copy(update={"tokens": 4, "features": 1 << 24, "axes": {"band": ["red", "nir"], "patch": ["a", "b"]}})
    plan.modalities["img"] = big
    with pytest.raises(UserError, match="--chunk-size 256: one chunk would take"):
        run_prepare(plan, _decoder(values, valid), tmp_path / "t", chunk_size=256)
    assert not (tmp_path / "t").exists()


def test_every_chunk_is_written_and_checksummed(tmp_path):
    """An all-zero chunk is written too (a deleted chunk must not read as zeros), each with a crc32c."""
    plan, values, valid = _plan()
    valid["img"][:8] = False  # chunk 0 of img: no valid token, all zeros
    run_prepare(plan, _decoder(values, valid), tmp_path / "s", chunk_size=8)
    root = zarr.open_group(tmp_path / "s" / "tokens.zarr", mode="r")
    for name in ("img/values", "img/valid", "tab/values", "tab/valid"):
        assert [c.to_dict()["name"] for c in root[name].metadata.codecs][-1] == "crc32c"
        files = list((tmp_path / "s" / "tokens.zarr" / name / "c").rglob("*"))
        assert len([f for f in files if f.is_file()]) == 7, name
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["version"] == 2 and set(meta["files"]) == {"samples.parquet", "classes.parquet", "prepare-report.json"}
