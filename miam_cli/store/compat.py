"""Do two descriptions of modalities mean the same tokens? (`prepare --like`, `predict STORE`, `map`)

A model reads token t of modality m as a fixed quantity: a store prepared for prediction, or the
pixels of a map, must give each modality the same kind, axes (names and values, in order) and
feature size as the store the model was trained on. Normalisation is not compared here: the reader
of a prediction applies the training store's statistics.
"""

from __future__ import annotations

from miam_cli.errors import UserError
from miam_cli.store.schema import ModalitySpec


def modality_differences(name: str, reference: ModalitySpec, candidate: ModalitySpec, ref_label: str, cand_label: str) -> list[str]:
    """One line per difference between two descriptions of modality `name` (empty when they agree)."""
    lines = []
    if reference.kind != candidate.kind:
        lines.append(f"modality {name}: kind {candidate.kind} in {cand_label}, {reference.kind} in {ref_label}")
    if list(reference.axes) != list(candidate.axes):
        lines.append(f"modality {name}: axes {', '.join(candidate.axes)} in {cand_label}, {', '.join(reference.axes)} in {ref_label}")
    else:
        for axis, values in reference.axes.items():
            if [str(v) for v in values] != [str(v) for v in candidate.axes[axis]]:
                lines.append(f"modality {name}: axis {axis} is {_short(candidate.axes[axis])} in {cand_label}, "
                             f"{_short(values)} in {ref_label}")
    if reference.features != candidate.features:
        lines.append(f"modality {name}: {candidate.features} features per token in {cand_label}, {reference.features} in {ref_label}")
    return lines


def check_same_modalities(reference: dict[str, ModalitySpec], candidate: dict[str, ModalitySpec], ref_label: str, cand_label: str,
                          *, allow_missing: bool = False) -> list[str]:
    """Refuse (exit 2, every difference listed) when `candidate` does not reproduce `reference`.

    `allow_missing`: modalities of `reference` absent from `candidate` are allowed (they are then never
    visible, as a map does for inputs that cannot be computed at a pixel) and returned.
    """
    lines, missing = [], [m for m in reference if m not in candidate]
    extra = [m for m in candidate if m not in reference]
    if extra:
        lines.append(f"{cand_label} has modalit{'y' if len(extra) == 1 else 'ies'} {', '.join(extra)} that {ref_label} does not "
                     f"(it has {', '.join(reference)})")
    if missing and not allow_missing:
        lines.append(f"{cand_label} lacks modalit{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} of {ref_label}")
    for m in reference:
        if m in candidate:
            lines += modality_differences(m, reference[m], candidate[m], ref_label, cand_label)
    if lines:
        raise UserError(f"{cand_label} does not reproduce the modalities of {ref_label}:\n  " + "\n  ".join(lines))
    return missing


def _short(values: list) -> str:
    text = [str(v) for v in values]
    return "[" + ", ".join(text if len(text) <= 6 else text[:3] + ["..."] + text[-2:]) + f"] ({len(text)})"
