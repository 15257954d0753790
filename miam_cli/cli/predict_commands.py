"""Prediction commands: `miam predict` (tables, GeoLifeCLEF submissions) and `miam map` (GeoTIFF maps)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from miam_cli.cli.common import Progress, log, out, print_json, print_table
from miam_cli.cli.options import BatchSize, Checkpoint, Device, JsonOut, RunDirArg, Threads, merge_option, shard_option

PredictShard, PredictMerge = shard_option("score the I-th of N slices of the split"), merge_option("the output file")
MapShard, MapMerge = shard_option("compute the I-th of N sets of tiles"), merge_option("the GeoTIFF")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
    app.command("map")(map_cmd)


def predict_cmd(
    run_dir: RunDirArg = None,
    store: Optional[Path] = typer.Argument(None, help="Token store to score [default: the run's own store]"),
    split: str = typer.Option("predict", help="predict (the unlabelled samples prepare keeps) | train | val | test"),
    subsets: Optional[List[str]] = typer.Option(None, "--subsets", help="Visible modalities: a selector such as 'sentinel2' or "
                                                "'tabular+landsat[year>=2015]', or unimodal; repeat for several [default: all modalities]"),
    species: Optional[List[str]] = typer.Option(None, "--species", help="One probability column per species (ids, names or class "
                                                "indices; comma-separated or repeated) instead of the top k"),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Most probable species per sample [default: 10; glc: 25]"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="glc: every species with p >= threshold (at most --top-k)"),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv | glc (GeoLifeCLEF submission: surveyId,predictions)"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Output file [default: RUN_DIR/predict/<store>-<split>.parquet]"),
    shard: PredictShard = None,
    merge: PredictMerge = False,
    checkpoint: Checkpoint = "best",
    batch_size: BatchSize = 1024,
    device: Device = "auto",
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """Predict species for the samples of a split (default: the unlabelled `predict` split), from any subset of modalities.

    Example: miam predict runs/geoplant-miam stores/geoplant --format glc --top-k 25
    """
    from miam_cli import api
    from miam_cli.runs.find import resolve_run
    from miam_cli.shards import requested_shard

    run = resolve_run(run_dir, log)
    with Progress("predict", None) as bar:
        res = api.predict(api.load_run(run, checkpoint, device), store, split=split, subsets=subsets, species=species, top_k=top_k,
                          threshold=threshold, format=fmt, out=out_file, shard=requested_shard(shard, merge, log), merge=merge,
                          batch_size=batch_size, progress=lambda d, t: bar.update(d, t, "samples"), threads=threads, log=log)
    log(f"wrote {res.path} ({res.rows} rows)" + ("; join the shards with --merge" if res.shard else ""))
    if json_out:
        print_json({"file": str(res.path), "rows": res.rows, "columns": res.columns, "split": res.split, "store": str(res.store),
                    "subsets": res.subsets, "format": res.format, "species": res.species, "top_k": res.top_k, "shard": res.shard})
        return
    head = res.table.head(5)
    cols = list(head.columns)[:9]
    print_table(f"{res.path} ({res.rows} rows; first 5, first {len(cols)} columns)", cols, head[cols].values.tolist())
    out.print(str(res.path))


def map_cmd(
    run_dir: Path = typer.Argument(..., help="Run dir (give the map spec alone to use the newest run under runs/)"),
    spec: Optional[Path] = typer.Argument(None, help="Map spec (YAML): a grid and the dataset-spec modalities to compute (docs/maps.md)"),
    species: Optional[List[str]] = typer.Option(None, "--species", help="Probability bands (ids, names or class indices; comma-separated "
                                                "or repeated) [default: the spec's species, else every class]"),
    contributions: bool = typer.Option(False, help="Add one exact modality-Shapley band per modality (for the species, or their mean)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="GeoTIFF to write [default: RUN_DIR/maps/<spec>.tif, -shapley.tif with --contributions]"),
    tile: Optional[int] = typer.Option(None, min=4, help="Tile side in pixels [default: from the tokens per pixel, at most 512]"),
    shard: MapShard = None,
    merge: MapMerge = False,
    overwrite: bool = typer.Option(False, help="Compute a complete map again (and discard tiles of other settings)."),
    checkpoint: Checkpoint = "best",
    batch_size: BatchSize = 1024,
    device: Device = "auto",
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """A species distribution map (Cloud-Optimised GeoTIFF) over a grid, each pixel predicted from the modalities valid there.

    An interrupted map resumes tile by tile when run again; SLURM array tasks take --shard, then one --merge.

    Example: miam map runs/landscape-miam data/landscape/map.yaml --contributions
    """
    from miam_cli import api
    from miam_cli.runs.find import resolve_run
    from miam_cli.shards import requested_shard

    if spec is None:
        run_dir, spec = None, run_dir
    run = resolve_run(run_dir, log)
    with Progress("map", None) as bar:
        res = api.predict_map(api.load_run(run, checkpoint, device), spec, out=out_file, species=species, contributions=contributions,
                              tile=tile, shard=requested_shard(shard, merge, log), merge=merge, overwrite=overwrite,
                              batch_size=batch_size, progress=lambda d, t: bar.update(d, t, "tiles"), threads=threads, log=log)
    rate = f"{res.pixels_per_second:,.0f} px/s" if res.pixels_computed else "no tile left to compute"
    if res.complete:
        log(f"wrote {res.path} ({res.width} x {res.height} px, {len(res.bands)} bands; {res.tiles_computed} of {res.tiles} tiles "
            f"computed now, {rate})")
    else:
        log(f"{res.tiles_computed} tile(s) computed ({rate}); {res.tiles_pending} of {res.tiles} still pending: run the other "
            "shards, then `miam map ... --merge`")
    if json_out:
        print_json({"file": str(res.path), "complete": res.complete, "width": res.width, "height": res.height, "bands": res.bands,
                    "tiles": res.tiles, "tiles_computed": res.tiles_computed, "tiles_pending": res.tiles_pending,
                    "valid_pixels": res.valid_pixels, "pixels_per_second": res.pixels_per_second, "seconds": res.seconds,
                    "efficiency_gap": res.efficiency_gap, "target": res.target, "never_visible": res.never_visible})
        return
    if not res.complete:
        return
    rows = [["size", f"{res.width} x {res.height} px"], ["bands", ", ".join(res.bands)], ["valid pixels", res.valid_pixels],
            ["tiles", res.tiles]]
    if res.efficiency_gap is not None:
        rows += [["contributions of", res.target], ["efficiency: max |sum phi - (v(all) - v(none))|", f"{res.efficiency_gap:.2e}"]]
    print_table(f"map {res.path}", ["", "value"], rows)
    out.print(str(res.path))
