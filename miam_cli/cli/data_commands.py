"""Data commands: `miam synth ...`, `miam prepare ...`, `miam store info`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from miam_cli.cli.common import Progress, default_path, log, out, print_json, print_table, shard_from_env, warn

synth_app = typer.Typer(help="Write synthetic datasets in real file layouts, with planted truth (truth.json).", no_args_is_help=True)
prepare_app = typer.Typer(help="Turn raw files into a token store (store.json, samples.parquet, tokens.zarr).", no_args_is_help=True)
store_app = typer.Typer(help="Inspect token stores.", no_args_is_help=True)


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
) -> None:
    """Synthetic GeoPlant data in the GLC24 Kaggle layout, with planted truth in truth.json.

    Example: miam synth geoplant data/geoplant --surveys 2000 --species 24 --seed 0
    """
    from miam_cli.synth.geoplant import synth_geoplant

    raw = default_path(raw_dir, Path("data/geoplant"), "RAW_DIR")
    with Progress("synth geoplant", surveys) as bar:
        summary = synth_geoplant(raw, surveys=surveys, species=species, seed=seed, progress=bar.update)
    log(f"wrote {surveys} surveys, {species} species to {raw} (truth: {raw / 'truth.json'})")
    out.print(str(raw))
    return summary


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
    workers: int = typer.Option(0, min=0, help="Decoding processes (0 = in this process)."),
    chunk_size: int = typer.Option(256, min=1, help="Samples per zarr chunk (and per unit of resume/shard)."),
    strict: bool = typer.Option(False, help="Refuse the data (exit 2, with the list) on any fault instead of marking it missing."),
    shard: Optional[str] = typer.Option(None, help="I/N: prepare the I-th of N slices (0-based); default from SLURM_ARRAY_TASK_ID/COUNT."),
    overwrite: bool = typer.Option(False, help="Rebuild a complete store."),
    json_out: bool = typer.Option(False, "--json", help="Print the store summary as JSON."),
) -> None:
    """GeoPlant (GLC24 Kaggle or GLC25 layout) -> token store. An interrupted prepare resumes when run again.

    Example: miam prepare geoplant data/geoplant stores/geoplant --workers 2
    """
    from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant

    raw = default_path(raw_dir, Path("data/geoplant"), "RAW_DIR")
    dest = default_path(store, Path("stores/geoplant"), "STORE")
    opts = GeoPlantOptions(layout=layout, grid=grid, min_occurrences=min_occurrences, split=split, block_size=block_size, seed=seed)
    plan, decoder = plan_geoplant(raw, opts)
    _run_prepare(plan, decoder, dest, workers, shard, strict, overwrite, chunk_size, json_out)


def _run_prepare(plan, decoder, dest: Path, workers, shard, strict, overwrite, chunk_size, json_out) -> None:
    from miam_cli.data.prepare import run_prepare
    from miam_cli.store.writer import parse_shard

    shard_ij = parse_shard(shard_from_env(shard))
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
    _print_summary(dest, json_out)


# ------------------------------------------------------------------ store info
@store_app.command("info")
def store_info_cmd(
    store: Optional[Path] = typer.Argument(None, help="Token store [default: stores/geoplant]"),
    json_out: bool = typer.Option(False, "--json", help="One JSON document instead of tables."),
) -> None:
    """Modalities, token axes, samples per split, missingness per modality, faults met at prepare.

    Example: miam store info stores/geoplant --json
    """
    _print_summary(default_path(store, Path("stores/geoplant"), "STORE"), json_out)


def _print_summary(path: Path, json_out: bool) -> None:
    from miam_cli.store.info import store_summary

    s = store_summary(path)
    if json_out:
        print_json(s)
        return
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    caption = f"{s['samples']} samples ({splits}); task {s['task']['type']}, {s['task']['num_classes']} classes"
    rows = []
    for m in s["modalities"]:
        axes = " × ".join(f"{a}[{d['size']}]" for a, d in m["axes"].items())
        miss = "" if m["missing_rate"] is None else f"{100 * m['missing_rate']:.1f}%"
        rows.append([m["name"], m["kind"], m["tokens"], m["features"], axes, miss])
    print_table(f"store {s['store']} ({s['dataset']})", ["modality", "kind", "tokens", "features", "axes", "missing"], rows, caption)
    if s["faults"] or s["dropped"]:
        print_table("faults met at prepare", ["kind", "count"], [[k, v] for k, v in {**s["faults"], **s["dropped"]}.items()])
