"""Which classes a user means by `--species`: class indices, original ids (e.g. GLC speciesId) or names."""

from __future__ import annotations

from miam_cli.errors import UserError, did_you_mean
from miam_cli.store.reader import TokenStore


def resolve_species(store: TokenStore, requests: list[str] | None) -> list[int] | None:
    """Class indices in the order asked (comma-separated or repeated; duplicates kept once); None when none asked.

    An unknown species is refused (exit 2) with the closest known id or name.
    """
    if not requests:
        return None
    words = [w.strip() for r in requests for w in str(r).split(",") if w.strip()]
    found, unknown = [], []
    for w in words:
        k = store.find_class(w)
        if k is None:
            unknown.append(w)
        elif k not in found:
            found.append(k)
    if unknown:
        known = store.classes["original_id"].astype(str).tolist() + store.classes["name"].astype(str).tolist()
        raise UserError(f"--species {unknown[0]!r}: not a class index, id or name of {store.path}/classes.parquet"
                        f"{did_you_mean(unknown[0], known)} (e.g. {', '.join(known[:5])})")
    return found
