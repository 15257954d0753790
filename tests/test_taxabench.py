"""TaxaBench: synth -> prepare (raw and embeddings routes) -> store, checked against direct computations.

One small synthetic dataset (80 observations, 6 species) and its raw store are built once per module;
the reference log-mel, raster lookup, image cut and location encoding are recomputed here
independently (explicit loops and formulas, no call into the readers under test).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from miam_cli.data import readers as R
from miam_cli.data.prepare import run_prepare
from miam_cli.data.taxabench import ENV_VARIABLES, TaxaBenchOptions, plan_taxabench, stratified_split
from miam_cli.errors import UserError
from miam_cli.store.reader import TokenStore
from miam_cli.synth.taxabench import synth_taxabench

N_OBS, N_SPECIES = 80, 6


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("taxabench") / "raw"
    synth_taxabench(path, observations=N_OBS, species=N_SPECIES, seed=3)
    return path


@pytest.fixture(scope="module")
def truth(raw) -> dict:
    return json.loads((raw / "truth.json").read_text())


def prepare(raw: Path, store: Path, **opts) -> TokenStore:
    plan, decoder = plan_taxabench(raw, TaxaBenchOptions(**opts))
    run_prepare(plan, decoder, store, chunk_size=32, overwrite=True)
    return TokenStore(store)


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory) -> TokenStore:
    return prepare(raw, tmp_path_factory.mktemp("taxabench-store") / "store")


def rows_of(store: TokenStore) -> dict[str, int]:
    return {s: i for i, s in enumerate(store.samples["sample_id"])}


# ------------------------------------------------------------------ synth layout
def test_synth_writes_the_taxabench_layout(raw, truth):
    df = pd.read_csv(raw / "test_df.csv")
    assert {"id", "latitude", "longitude", "scientific_name", "observed_on", "taxon_id"} <= set(df.columns)
    assert len(df) == N_OBS and df["id"].is_unique
    for sid, lat, lon in df[["id", "latitude", "longitude"]].itertuples(index=False):
        assert (raw / "taxabench_images" / f"{sid}.jpg").is_file()
        assert (raw / "sat_images" / "sentinel" / f"{sid}_{lat:.6f}_{lon:.6f}.jpeg").is_file()
    sounds = sorted(p.suffix for p in (raw / "taxabench_sound").iterdir())
    assert set(sounds) == {".wav", ".flac", ".m4a"} and len(sounds) == N_OBS
    assert sounds.count(".m4a") == len(truth["m4a_observations"]) >= 1
    grid = np.load(raw / "bioclim_elevation_scaled.npy")
    assert grid.dtype == np.float16 and grid.shape[2] == 20 and np.isnan(grid).any()
    assert truth["modality_strength"] == ["ground", "audio", "environment", "satellite", "location"]
    assert sum(s["count"] for s in truth["species"]) == N_OBS


def test_synth_is_deterministic(tmp_path, raw):
    again = tmp_path / "again"
    synth_taxabench(again, observations=N_OBS, species=N_SPECIES, seed=3)
    for rel in ("test_df.csv", "bioclim_elevation_scaled.npy", "truth.json"):
        assert (again / rel).read_bytes() == (raw / rel).read_bytes()
    wav = next((raw / "taxabench_sound").glob("*.wav"))
    assert (again / "taxabench_sound" / wav.name).read_bytes() == wav.read_bytes()


# ------------------------------------------------------------------ raw route
def test_raw_round_trip(store, raw, truth):
    meta = store.meta
    assert meta.task.type == "multiclass" and meta.task.metric == "top1" and meta.task.num_classes == N_SPECIES
    assert list(meta.modalities) == ["ground", "satellite", "audio", "environment", "location"]
    shapes = {m: (s.kind, s.tokens, s.features) for m, s in meta.modalities.items()}
    assert shapes == {"ground": ("image", 48, 256), "satellite": ("image", 48, 256), "audio": ("audio", 10, 32),
                      "environment": ("tabular", 20, 1), "location": ("location", 1, 32)}
    assert meta.modalities["ground"].axes["band"] == ["red", "green", "blue"]
    assert meta.modalities["environment"].axes["variable"] == ENV_VARIABLES
    assert meta.num_samples == N_OBS and sum(meta.splits.values()) == N_OBS
    # labels: each observation's taxon_id, through the class table
    df = pd.read_csv(raw / "test_df.csv", dtype=str).set_index("id")
    classes = store.classes.set_index("class_index")["original_id"]
    got = {sid: classes[int(lab[0])] for sid, lab in zip(store.samples["sample_id"], store.samples["labels"])}
    assert got == df["taxon_id"].to_dict()
    # missingness: exactly the m4a recordings lack audio, exactly the sea observations lack environment
    samples = store.samples.set_index("sample_id")
    assert set(samples.index[~samples["has_audio"]]) == set(truth["m4a_observations"])
    assert set(samples.index[~samples["has_environment"]]) == set(truth["sea_observations"])
    assert samples[["has_ground", "has_satellite", "has_location"]].all().all()


def test_image_tokens_are_band_by_subpatch_cuts(store, raw):
    sid = store.samples["sample_id"].iloc[5]
    with Image.open(raw / "taxabench_images" / f"{sid}.jpg") as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    h, w, _ = rgb.shape
    s = min(h, w)
    square = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    bands = [np.asarray(Image.fromarray(np.ascontiguousarray(square[..., b])).resize((64, 64), Image.BILINEAR)) for b in range(3)]
    values, valid = store.read("ground", np.array([5]), normalize=False)
    assert valid.all()
    for b in range(3):
        for r in range(4):
            for c in range(4):
                cut = bands[b][16 * r : 16 * r + 16, 16 * c : 16 * c + 16].ravel()
                np.testing.assert_allclose(values[0, b * 16 + r * 4 + c], cut, atol=0.5)  # float16 on disk


def test_environment_equals_direct_raster_index(store, raw):
    grid = np.load(raw / "bioclim_elevation_scaled.npy")
    H, W, _ = grid.shape
    values, valid = store.read("environment", np.arange(N_OBS), normalize=False)
    for i, (lon, lat) in enumerate(store.samples[["lon", "lat"]].itertuples(index=False)):
        cell = grid[int((90 - lat) * H / 180), int((lon + 180) * W / 360)].astype(np.float32)
        np.testing.assert_array_equal(valid[i], ~np.isnan(cell))
        np.testing.assert_array_equal(values[i, :, 0], np.nan_to_num(cell, nan=0.0))


def test_grid_index_edges():
    rows, cols = R.grid_index([-180, 179.999, 180, 0], [90, -89.999, -90, 0], 90, 180)
    assert rows.tolist() == [0, 89, 89, 45] and cols.tolist() == [0, 179, 179, 90]


def test_location_token_is_the_sinusoidal_encoding(store):
    values, valid = store.read("location", np.arange(3), normalize=False)
    for i, (lon, lat) in enumerate(store.samples[["lon", "lat"]].iloc[:3].itertuples(index=False)):
        expected = []
        for k in range(8):
            a, b = math.radians(lon) * 2**k, math.radians(lat) * 2**k
            expected += [math.sin(a), math.cos(a), math.sin(b), math.cos(b)]
        np.testing.assert_allclose(values[i, 0], expected, atol=1e-5)


# ------------------------------------------------------------------ audio
def reference_log_mel(x: np.ndarray, sr: int, tokens=10, seconds=5.0, n_fft=512, win=400, hop=160, n_mels=32,
                      fmin=50.0, fmax=8000.0, eps=1e-6) -> tuple[np.ndarray, np.ndarray]:
    """An independent log-mel: explicit frame loop, numpy FFT, a mel matrix built filter by filter."""
    x = x[: int(round(seconds * sr))].astype(np.float64)
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    lo, hi = mel(fmin), mel(min(fmax, sr / 2))
    edges = [hz(lo + (hi - lo) * j / (n_mels + 1)) for j in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if edges[m] <= f <= edges[m + 1]:
                bank[m, k] = (f - edges[m]) / (edges[m + 1] - edges[m])
            elif edges[m + 1] < f <= edges[m + 2]:
                bank[m, k] = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)])
    seg = seconds * sr / tokens
    sums, counts = np.zeros((tokens, n_mels)), np.zeros(tokens)
    i = 0
    while i * hop + win <= len(x):
        t = int(i * hop // seg)
        if t < tokens:
            frame = np.zeros(n_fft)
            frame[:win] = x[i * hop : i * hop + win] * window
            sums[t] += bank @ (np.abs(np.fft.rfft(frame)) ** 2)
            counts[t] += 1
        i += 1
    valid = counts > 0
    out = np.zeros((tokens, n_mels))
    out[valid] = np.log(sums[valid] / counts[valid, None] + eps)
    return out, valid


def test_audio_tokens_equal_a_reference_log_mel(store, raw):
    rows = rows_of(store)
    checked = 0
    for path in sorted((raw / "taxabench_sound").iterdir()):
        if path.suffix == ".m4a" or sf.info(str(path)).samplerate != 16000:
            continue
        x, sr = sf.read(str(path), dtype="float32")
        expected, ok = reference_log_mel(x, sr)
        values, valid = store.read("audio", np.array([rows[path.stem]]), normalize=False)
        np.testing.assert_array_equal(valid[0], ok)
        np.testing.assert_allclose(values[0], expected, rtol=1e-4, atol=1e-3)
        checked += 1
        if checked == 3:
            break
    assert checked == 3
    # a 2-4 s clip read over 5 s: the tokens past its end are invalid
    assert not valid[0].all() and valid[0][:4].all()


def test_resampling_keeps_a_tone_in_its_mel_band(tmp_path):
    rate, hz = 22050, 1000.0
    t = np.arange(int(1.2 * rate)) / rate
    path = tmp_path / "tone.flac"
    sf.write(path, 0.5 * np.sin(2 * np.pi * hz * t), rate)
    params = R.LogMelParams(seconds=1.0, tokens=2)
    tokens, valid = R.AudioReader(params)(str(path))
    assert valid.all()
    edges = [700 * (10 ** (m / 2595) - 1) for m in np.linspace(2595 * math.log10(1 + 50 / 700), 2595 * math.log10(1 + 8000 / 700), 34)]
    band = max(range(32), key=lambda m: -abs(edges[m + 1] - hz))  # the filter peaking nearest 1 kHz
    assert abs(int(tokens[0].argmax()) - band) <= 1


def test_m4a_is_an_unreadable_audio_fault(store, truth):
    # the synthetic .m4a files are broken MP4 containers: PyAV (a test dependency) tries them and fails too
    faults = [f for f in store.report["faults"] if f["kind"] == "unreadable_audio"]
    assert store.report["counts"] == {"unreadable_audio": len(truth["m4a_observations"])}
    assert sorted(f["sample"] for f in faults) == sorted(truth["m4a_observations"])
    assert all(f["modality"] == "audio" and f["file"].endswith(".m4a") and "PyAV" in f["detail"] for f in faults)


# ------------------------------------------------------------------ classes and split
def test_stratified_split_keeps_class_proportions(store):
    for row in store.classes.itertuples(index=False):
        n = row.count_train + row.count_val + row.count_test
        for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(getattr(row, f"count_{split}") - frac * n) <= 1, (row, split)
    assert store.meta.split["method"] == "stratified-by-class"


def test_stratified_split_function():
    labels = np.repeat(np.arange(4), [100, 40, 7, 1])
    split = stratified_split(labels, seed=0)
    for c, n in enumerate([100, 40, 7, 1]):
        got = [(split[labels == c] == s).sum() for s in ("train", "val", "test")]
        assert sum(got) == n and all(abs(g - f * n) <= 1 for g, f in zip(got, (0.7, 0.15, 0.15)))
    np.testing.assert_array_equal(split, stratified_split(labels, seed=0))
    assert (split != stratified_split(labels, seed=1)).any()


def test_min_per_class_keeps_frequent_classes(raw, truth, tmp_path):
    counts = sorted(s["count"] for s in truth["species"])
    cut = counts[len(counts) // 2]  # about half the species survive
    kept = {str(s["taxon_id"]) for s in truth["species"] if s["count"] >= cut}
    store = prepare(raw, tmp_path / "store", min_per_class=cut, embeddings=[str(raw / "embeddings.pt")])
    assert set(store.classes["original_id"]) == kept
    assert store.meta.num_samples == sum(s["count"] for s in truth["species"] if s["count"] >= cut)
    assert store.report["dropped"]["rare_classes"] == N_SPECIES - len(kept)
    with pytest.raises(UserError, match="min-per-class"):
        plan_taxabench(raw, TaxaBenchOptions(min_per_class=N_OBS + 1))


# ------------------------------------------------------------------ embeddings route
def test_embeddings_route_pt(raw, tmp_path):
    store = prepare(raw, tmp_path / "store", embeddings=[str(raw / "embeddings.pt")])
    data = torch.load(raw / "embeddings.pt", weights_only=True)
    assert list(store.meta.modalities) == ["ground", "satellite", "audio", "environment", "location"]
    position = {sid: k for k, sid in enumerate(data["ids"])}
    idx = np.arange(N_OBS)
    order = [position[s] for s in store.samples["sample_id"]]
    for m in store.modalities:
        spec = store.meta.modalities[m]
        assert (spec.kind, spec.tokens, spec.features) == ("embedding", 1, 16)
        values, valid = store.read(m, idx, normalize=False)
        assert valid.all()
        np.testing.assert_allclose(values[:, 0], data[m].numpy()[order], rtol=1e-6)
    assert store.report["counts"] == {}


def test_embeddings_route_npy_and_parquet(raw, tmp_path):
    data = torch.load(raw / "embeddings.pt", weights_only=True)
    ids = data["ids"]
    np.save(tmp_path / "ground.npy", data["ground"].numpy()[:-2])  # the last two observations have no vector
    (tmp_path / "ground.ids.txt").write_text("\n".join(ids[:-2]) + "\n")
    np.save(tmp_path / "vectors.npy", data["audio"].numpy())
    (tmp_path / "vectors_ids.txt").write_text("\n".join(ids))
    pd.DataFrame({"id": [int(i) for i in ids], "satellite": list(data["satellite"].numpy()),
                  "location": list(data["location"].numpy())}).to_parquet(tmp_path / "emb.parquet")
    files = [str(tmp_path / "ground.npy"), f"audio={tmp_path / 'vectors.npy'}", str(tmp_path / "emb.parquet")]
    store = prepare(raw, tmp_path / "store", embeddings=files)
    assert list(store.meta.modalities) == ["ground", "satellite", "audio", "location"]
    samples = store.samples.set_index("sample_id")
    assert set(samples.index[~samples["has_ground"]]) == set(ids[-2:])
    assert store.report["counts"] == {"missing_embedding": 2}
    row = rows_of(store)[ids[0]]
    np.testing.assert_allclose(store.read("location", np.array([row]), normalize=False)[0][0, 0], data["location"][0].numpy(), rtol=1e-6)
    with pytest.raises(UserError, match="in both"):
        plan_taxabench(raw, TaxaBenchOptions(embeddings=[str(tmp_path / "ground.npy"), f"ground={tmp_path / 'vectors.npy'}"]))
    (tmp_path / "lonely.npy").write_bytes((tmp_path / "ground.npy").read_bytes())
    with pytest.raises(UserError, match="lonely.ids.txt"):
        plan_taxabench(raw, TaxaBenchOptions(embeddings=[str(tmp_path / "lonely.npy")]))


# ------------------------------------------------------------------ CLI
def test_cli_exit_codes(cli, raw, tmp_path):
    code, _, err = cli("prepare", "taxabench", raw, tmp_path / "strict", "--strict")
    assert code == 2 and "unreadable_audio" in err and "Traceback" not in err
    code, out, _ = cli("prepare", "taxabench", raw, tmp_path / "store", "--json", "--min-per-class", "2", "--workers", "0")
    assert code == 0
    summary = json.loads(out)
    assert summary["dataset"] == "taxabench" and summary["faults"]["unreadable_audio"] >= 1
    code, _, err = cli("prepare", "taxabench", raw, tmp_path / "store")
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("prepare", "taxabench", tmp_path / "nowhere", tmp_path / "x")
    assert code == 2 and "no such directory" in err
    code, _, err = cli("prepare", "taxabench", raw, tmp_path / "y", "--embeddings", tmp_path / "none.pt")
    assert code == 2 and "no such embeddings file" in err


def test_cli_synth(cli, tmp_path):
    code, out, _ = cli("synth", "taxabench", tmp_path / "raw", "--observations", "12", "--species", "3", "--seed", "1")
    assert code == 0 and (tmp_path / "raw" / "truth.json").is_file()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    code, _, err = cli("synth", "taxabench", tmp_path / "busy", "--observations", "12", "--species", "3")
    assert code == 2 and "not empty" in err


# ------------------------------------------------------------------ recipe
def test_recipe_trains_one_epoch_on_a_taxabench_store(store, tmp_path):
    from miam_cli.recipe import load_recipe
    from miam_cli.engine.train import train

    torch.set_num_threads(1)
    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "taxabench.yaml"
    recipe = load_recipe(recipe_path, [f"store={store.path}", "train.epochs=1", "model.d_model=32", "model.depth=1"])
    assert set(recipe.groups(store.modalities)) == {"ground", "satellite", "audio", "environment", "location"}
    run = train(recipe, out=tmp_path / "run", log=lambda *a, **k: None).run_dir
    metrics = pd.read_csv(Path(run) / "metrics.csv")
    assert len(metrics) == 1 and np.isfinite(metrics["train_loss"]).all()
    assert (Path(run) / "checkpoints" / "last.pt").is_file()


def test_real_m4a_decodes_through_pyav(tmp_path):
    # a 440 Hz tone encoded to AAC in an MP4 container, which libsndfile cannot read
    import av

    rate, seconds, hz = 16000, 1.0, 440.0
    path = tmp_path / "tone.m4a"
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))
    signal, got_rate = R.read_audio(path)
    assert got_rate == rate and abs(len(signal) - len(tone)) <= 2048  # AAC pads by up to two frames
    spectrum = np.abs(np.fft.rfft(signal))
    assert abs(np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()] - hz) < 2
    assert 0.3 < np.abs(signal).max() < 0.7
