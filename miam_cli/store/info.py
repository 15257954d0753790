"""`miam store info`: a summary of a token store as one dict (printed as tables or JSON by the CLI)."""

from __future__ import annotations

from pathlib import Path

from miam_cli.store.integrity import CHECKSUMMED_SINCE, check_structure
from miam_cli.store.labels import split_label_counts
from miam_cli.store.reader import TokenStore


def store_summary(path: Path) -> dict:
    """The summary, after the structural check (a store missing arrays or chunks is refused, exit 2)."""
    store = TokenStore(path)
    check_structure(store)
    meta, report = store.meta, store.report
    missing = report.get("missing_rate", {})
    modalities = []
    for name, spec in meta.modalities.items():
        modalities.append({
            "name": name,
            "kind": spec.kind,
            "tokens": spec.tokens,
            "features": spec.features,
            "axes": {a: _axis_summary(v) for a, v in spec.axes.items()},
            "missing_rate": missing.get(name),
            "normalization": spec.normalization.scope,
        })
    return {
        "store": str(path),
        "dataset": meta.dataset,
        "format": f"{meta.format} v{meta.version}",
        "checked": "structure (tables, array shapes" + (", every chunk file present; `miam store verify` reads them)"
                                                         if meta.version >= CHECKSUMMED_SINCE else
                                                         "; a version-1 store has no chunk checksums)"),
        "task": meta.task.model_dump(),
        "samples": meta.num_samples,
        "splits": meta.splits,
        "split": meta.split,
        # from samples.parquet, so stores prepared before prepare-report.json had them show them too
        "labels": split_label_counts(store.samples["labels"], store.samples["split"], meta.task.num_classes),
        "modalities": modalities,
        "faults": report.get("counts", {}),
        "dropped": report.get("dropped", {}),
        "provenance": meta.provenance,
    }


def _axis_summary(values: list) -> dict:
    shown = values if len(values) <= 8 else values[:3] + ["…"] + values[-2:]
    return {"size": len(values), "values": shown}
