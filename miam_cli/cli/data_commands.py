"""Data commands: `miam synth ...`, `miam prepare ...`, `miam store info`, `miam store verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from miam_cli.cli.common import Progress, default_path, log, out, print_json, print_table, use_threads, warn
from miam_cli.cli.options import App, JsonOut, Threads, shard_option

# Options every `prepare` command shares (one definition, so their help cannot drift apart)
Workers = Annotated[int, typer.Option(min=0, help="Decoding processes (0 = in this process).")]
ChunkSize = Annotated[int, typer.Option(min=1, max=1 << 20, help="Samples per zarr chunk (and per unit of resume/shard); capped at the number of samples.")]
Strict = Annotated[bool, typer.Option(help="Refuse the data (exit 2, with the list) on any fault instead of marking it missing.")]
Shard = shard_option("prepare the I-th of N slices")
Overwrite = Annotated[bool, typer.Option(help="Rebuild a complete store.")]
OutsideRoot = Annotated[bool, typer.Option("--allow-outside-root", help="Also read files that resolve outside RAW_DIR (symlinks out); refused by default.")]
Like = Annotated[Optional[Path], typer.Option(help="A training store whose class list and normalisation this store reuses, so that a "
                                                   "model trained on it can predict here (modalities must match: else exit 2).")]

synth_app = App(help="Write synthetic datasets in real file layouts, with planted truth (truth.json).", no_args_is_help=True)
prepare_app = App(help="Turn raw files into a token store (store.json, samples.parquet, tokens.zarr).", no_args_is_help=True)
store_app = App(help="Inspect and verify token stores.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
    app.add_typer(prepare_app, name="prepare")
    app.add_typer(store_app, name="store")


# ------------------------------------------------------------------ synth
@synth_app.command("geoplant")
def synth_geoplant_cmd(
    raw_dir: Optional[Path] = typer.Argument(None, help="Where to write the raw files [default: data/geoplant]"),
    surveys: int = typer.Option(2000, min=10, help="Number of surveys."),
    species: int = typer.Option(24, min=2, help="Number of species."),
    seed: int = typer.Option(0, help="Random seed: same seed, same files."),
    generator_version: int = typer.Option(
        3, "--generator-version", help="3: the paper's regime (strong but redundant Sentinel-2); 2: the v2 study's data."),
    threads: Threads = None,
) -> None:
    """Synthetic GeoPlant data in the GLC24 Kaggle layout, with planted truth in truth.json.

    Example: miam synth geoplant data/geoplant --surveys 2000 --species 24 --seed 0
    """
    from miam_cli.synth.geoplant import synth_geoplant

    _run_synth("geoplant", synth_geoplant, raw_dir, surveys, f"{surveys} surveys, {species} species", threads,
               surveys=surveys, species=species, seed=seed, version=generator_version)


def _run_synth(dataset: str, generate, raw_dir: Optional[Path], count: int, what: str, threads: int | None, **kwargs) -> None:
    use_threads(threads)
    raw = default_path(raw_dir, Path("data") / dataset, "RAW_DIR")
    with Progress(f"synth {dataset}", count) as bar:
        generate(raw, progress=bar.update, **kwargs)
    log(f"wrote {what} to {raw} (truth: {raw / 'truth.json'})")
    if (raw / "spec.yaml").exists():
        log(f"next: miam prepare custom {raw / 'spec.yaml'}  (then: miam train {raw / 'recipe.yaml'})")
    out.print(str(raw))


# ------------------------------------------------------------------ prepare
@prepare_app.command("geoplant")
def prepare_geoplant_cmd(
    raw_dir: Optional[Path] = typer.Argument(None, help="Raw GeoPlant files [default: data/geoplant]"),
    store: Optional[Path] = typer.Argument(None, help="Token store to write [default: stores/geoplant]"),
    layout: str = typer.Option("auto", help="auto | glc24 | glc25"),
    grid: int = typer.Option(4, min=1, help="Sentinel-2 sub-patch grid (grid x grid tokens per band)."),
    min_occurrences: int = typer.Option(1, min=1, help="Keep species with at least this many presences in train."),
    split: str = typer.Option("spatial", help="spatial (blocks, seeded) | data (the metadata's train/test; val carved spatially)"),
    block_size: float = typer.Option(0.5, min=0.001, help="Spatial block size in degrees."),
    seed: int = typer.Option(0, help="Seed of the block split."),
    like: Like = None,
    workers: Workers = 0,
    threads: Threads = None,
    chunk_size: ChunkSize = 256,
    strict: Strict = False,
    shard: Shard = None,
    overwrite: Overwrite = False,
    allow_outside_root: OutsideRoot = False,
    json_out: JsonOut = False,
) -> None:
    """GeoPlant (GLC24 Kaggle or GLC25 layout) -> token store. An interrupted prepare resumes when run again.

    Unlabelled test surveys (metadata without speciesId) are kept in the `predict` split, for `miam predict`.
    Example: miam prepare geoplant data/geoplant stores/geoplant --workers 2
    """
    from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant

    raw = default_path(raw_dir, Path("data/geoplant"), "RAW_DIR")
    dest = default_path(store, Path("stores/geoplant"), "STORE")
    opts = GeoPlantOptions(layout=layout, grid=grid, min_occurrences=min_occurrences, split=split, block_size=block_size, seed=seed,
                           allow_outside_root=allow_outside_root, like=like)
    plan, decoder = plan_geoplant(raw, opts)
    _run_prepare(plan, decoder, dest, workers, threads, shard, strict, overwrite, chunk_size, json_out)


def _run_prepare(plan, decoder, dest: Path, workers, threads, shard, strict, overwrite, chunk_size, json_out) -> None:
    from miam_cli.data.prepare import run_prepare
    from miam_cli.shards import requested_shard

    use_threads(threads, workers)
    shard_ij = requested_shard(shard, merge=False, log=log) or (0, 1)
    for w in plan.warnings:
        warn(w)
    log(f"preparing {len(plan.samples)} samples, modalities {', '.join(plan.modalities)} -> {dest}")
    with Progress("prepare", None) as bar:
        result = run_prepare(plan, decoder, dest, workers=workers, shard=shard_ij, strict=strict, overwrite=overwrite,
                             chunk_size=chunk_size, progress=lambda d, t: bar.update(d, t, "chunks"))
    if result.meta is None:
        log(f"shard {shard_ij[0]}/{shard_ij[1]} done; {result.chunks_pending_elsewhere} chunk(s) left to other shards "
            "(the store is finalised by whichever run finds every chunk done; re-run any shard to finalise)")
        return
    if result.faults:
        warn(f"{result.faults} fault(s) marked missing; see {dest / 'prepare-report.json'}")
    unlabelled = result.meta.splits.get("predict", 0)
    if unlabelled:
        log(f"{unlabelled} unlabelled sample(s) kept in the predict split: score them with `miam predict RUN {dest}`")
    _print_summary(dest, json_out)


# ------------------------------------------------------------------ store info
@store_app.command("info")
def store_info_cmd(
    store: Optional[Path] = typer.Argument(None, help="Token store [default: stores/geoplant]"),
    json_out: JsonOut = False,
) -> None:
    """Modalities, token axes, samples per split, missingness per modality, faults met at prepare.

    Example: miam store info stores/geoplant --json
    """
    _print_summary(default_path(store, Path("stores/geoplant"), "STORE"), json_out)


@store_app.command("verify")
def store_verify_cmd(
    store: Optional[Path] = typer.Argument(None, help="Token store [default: stores/geoplant]"),
    json_out: JsonOut = False,
) -> None:
    """Read every chunk and table of a store and check them against their checksums and store.json (exit 2 if damaged).

    Example: miam store verify stores/geoplant
    """
    from miam_cli.errors import UserError
    from miam_cli.store.verify import verify_store

    path = default_path(store, Path("stores/geoplant"), "STORE")
    with Progress("verify", None) as bar:
        report = verify_store(path, progress=lambda d, t: bar.update(d, t, "chunks"))
    if json_out:
        print_json({"store": str(path), "ok": report.ok, "version": report.version, "checksummed": report.checksummed,
                    "chunks": report.chunks, "files": report.files, "problems": report.problems})
    for p in report.problems[1:]:
        warn(p)
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more problem(s) above)" if len(report.problems) > 1 else ""
        raise UserError(f"{report.problems[0]}{more}")
    note = "" if report.checksummed else " (a version-1 store: its chunks carry no checksums, only their readability was checked)"
    if not json_out:
        out.print(f"ok: {path}: {report.chunks} chunks and {report.files} tables verified{note}", highlight=False)


def _print_summary(path: Path, json_out: bool) -> None:
    from miam_cli.store.info import store_summary

    s = store_summary(path)
    if json_out:
        print_json(s)
        return
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    caption = (f"{s['samples']} samples ({splits}); task {s['task']['type']}, {s['task']['num_classes']} classes; "
               f"{s['format']}, checked: {s['checked']}")
    rows = []
    for m in s["modalities"]:
        axes = " × ".join(f"{a}[{d['size']}]" for a, d in m["axes"].items())
        miss = "" if m["missing_rate"] is None else f"{100 * m['missing_rate']:.1f}%"
        rows.append([m["name"], m["kind"], m["tokens"], m["features"], axes, miss])
    print_table(f"store {s['store']} ({s['dataset']})", ["modality", "kind", "tokens", "features", "axes", "missing"], rows, caption)
    _print_labels(s)
    if s["faults"] or s["dropped"]:
        print_table("faults met at prepare", ["kind", "count"], [[k, v] for k, v in {**s["faults"], **s["dropped"]}.items()])


def _print_labels(s: dict) -> None:
    one = s["task"]["num_classes"] == 1
    rows = []
    for name, c in s["labels"].items():
        rate = "–" if c["positive_rate"] is None else f"{100 * c['positive_rate']:.1f}%"
        rows.append([name, c["samples"], c["positives"], rate, f"{c['classes_present']}/{s['task']['num_classes']}"])
    split = s["split"]
    how = (f"spatial blocks of {split['block_size']}" + (", assigned label-aware" if split.get("balance") == "labels" else "")
           if split.get("block_size") else split.get("method", ""))
    print_table("labels per split", ["split", "samples", "presences" if one else "labels", "positive rate", "classes present"], rows,
                f"split: {how}" if how else None)


# ------------------------------------------------------------------ TaxaBench and custom datasets
@synth_app.command("taxabench")
def synth_taxabench_cmd(
    raw_dir: Optional[Path] = typer.Argument(None, help="Where to write the raw files [default: data/taxabench]"),
    observations: int = typer.Option(600, min=10, help="Number of observations."),
    species: int = typer.Option(12, min=2, help="Number of species (classes)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same files."),
    threads: Threads = None,
) -> None:
    """Synthetic TaxaBench-8k data (photos, sounds, satellite chips, climate raster), with planted truth.

    Example: miam synth taxabench data/taxabench --observations 600 --species 12 --seed 0
    """
    from miam_cli.synth.taxabench import synth_taxabench

    _run_synth("taxabench", synth_taxabench, raw_dir, observations, f"{observations} observations, {species} species", threads,
               observations=observations, species=species, seed=seed)


@synth_app.command("points")
def synth_points_cmd(
    raw_dir: Optional[Path] = typer.Argument(None, help="Where to write the files [default: data/points]"),
    points: int = typer.Option(3000, min=50, help="Number of points (30% presences, the rest background)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same files."),
    threads: Threads = None,
) -> None:
    """Presence/background points in a projected CRS (UTM 31N, x/y in metres), covariate GeoTIFFs, a ready
    dataset spec, recipe and map spec, with planted truth in truth.json.

    Example: miam synth points data/points --points 3000 && miam prepare custom data/points/spec.yaml
    """
    from miam_cli.synth.points import synth_points

    _run_synth("points", synth_points, raw_dir, points, f"{points} points", threads, points=points, seed=seed)


@prepare_app.command("taxabench")
def prepare_taxabench_cmd(
    raw_dir: Optional[Path] = typer.Argument(None, help="Raw TaxaBench-8k files [default: data/taxabench]"),
    store: Optional[Path] = typer.Argument(None, help="Token store to write [default: stores/taxabench]"),
    embeddings: Optional[list[str]] = typer.Option(
        None, "--embeddings", help="Precomputed embeddings (.pt, .npz, .npy + ids, .parquet; NAME=FILE names a single-array "
                                   "file's modality); repeatable. Given: one embedding token per modality instead of raw decoding."),
    min_per_class: int = typer.Option(1, min=1, help="Keep classes with at least this many observations."),
    seed: int = typer.Option(0, help="Seed of the stratified split."),
    grid: int = typer.Option(4, min=1, help="Sub-patch grid of the images (grid x grid tokens per band)."),
    image_size: int = typer.Option(64, min=1, help="Side in pixels the images' centre square is resized to."),
    audio_seconds: float = typer.Option(5.0, min=0.1, help="Seconds of each recording used."),
    audio_tokens: int = typer.Option(10, min=1, help="Time tokens per recording."),
    workers: Workers = 0,
    threads: Threads = None,
    chunk_size: ChunkSize = 256,
    strict: Strict = False,
    shard: Shard = None,
    overwrite: Overwrite = False,
    allow_outside_root: OutsideRoot = False,
    json_out: JsonOut = False,
) -> None:
    """TaxaBench-8k (raw files, or precomputed per-modality embeddings) -> token store; multi-class, stratified split.

    Example: miam prepare taxabench data/taxabench stores/taxabench --min-per-class 5
    """
    from miam_cli.data.readers import LogMelParams
    from miam_cli.data.taxabench import TaxaBenchOptions, plan_taxabench

    raw = default_path(raw_dir, Path("data/taxabench"), "RAW_DIR")
    dest = default_path(store, Path("stores/taxabench"), "STORE")
    opts = TaxaBenchOptions(embeddings=list(embeddings or []), min_per_class=min_per_class, seed=seed, grid=grid,
                            image_size=image_size, audio=LogMelParams(seconds=audio_seconds, tokens=audio_tokens),
                            allow_outside_root=allow_outside_root)
    plan, decoder = plan_taxabench(raw, opts)
    _run_prepare(plan, decoder, dest, workers, threads, shard, strict, overwrite, chunk_size, json_out)


@prepare_app.command("custom")
def prepare_custom_cmd(
    spec: Path = typer.Argument(..., help="Dataset spec (YAML; see docs/dataset-spec.md)."),
    store: Optional[Path] = typer.Argument(None, help="Token store to write [default: stores/<spec name>]"),
    like: Like = None,
    workers: Workers = 0,
    threads: Threads = None,
    chunk_size: ChunkSize = 256,
    strict: Strict = False,
    shard: Shard = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Your own data, described by a dataset spec: points table + modalities (columns, rasters, files, cubes, embeddings).

    Points with an empty label cell are kept in the `predict` split (points.unlabelled: drop leaves them out).
    Example: miam prepare custom my-data.yaml stores/my-data
    """
    from miam_cli.data.custom import load_spec, plan_custom

    dataset = load_spec(spec)
    dest = default_path(store, Path("stores") / dataset.name, "STORE")
    plan, decoder = plan_custom(dataset, spec, like)
    _run_prepare(plan, decoder, dest, workers, threads, shard, strict, overwrite, chunk_size, json_out)
