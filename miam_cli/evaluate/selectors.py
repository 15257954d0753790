"""Selectors: a small language naming partial inputs over the token store's axes.

    selector = term ('+' term)*
    term     = NAME ('[' cond (';' cond)* ']')?
    cond     = AXIS OP VALUE (',' VALUE)*        OP: = != >= <= > <

`sentinel2`, `sentinel2[band=red,nir]`, `landsat[year>=2015]`, `sentinel2[patch=center]`,
`tabular+landsat[year=2018]`, `sentinel2[band=red;patch=center]` (conditions in one bracket AND
together; terms joined by '+' OR together). A NAME is a store modality or a masking group (all its
store modalities, whole). Patch axes (values `r<row>c<col>`) also accept `center` (the middle 2x2 of
an even grid, the middle patch of an odd one) and `edge` (the border ring).

Parsing (`parse_selector`) is pure; `resolve_selector` checks names, axes and values against the
store's modality descriptions and returns a visible-token mask per store modality.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from miam_cli.errors import UserError, did_you_mean

OPERATORS = ("=", "!=", ">=", "<=", ">", "<")
_ORDERED_OPS = (">=", "<=", ">", "<")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_VALUE = re.compile(r"[^\s,;\[\]+=<>!]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_PATCH = re.compile(r"r(\d+)c(\d+)")
_MAX_LISTED = 20


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Condition:
    axis: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.axis}{self.op}{','.join(self.values)}"


@dataclass(frozen=True)
class Term:
    name: str
    conditions: tuple[Condition, ...] = ()

    def __str__(self) -> str:
        if not self.conditions:
            return self.name
        return f"{self.name}[{';'.join(map(str, self.conditions))}]"


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...]

    def __str__(self) -> str:
        return "+".join(map(str, self.terms))


# --------------------------------------------------------------------------- parsing


class _Parser:
    """Recursive descent over the text, keeping the position for error messages."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, what: str, pos: int | None = None) -> UserError:
        pos = self.pos if pos is None else pos
        return UserError(f"bad selector {self.text!r} at position {pos}: {what}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, s: str) -> bool:
        self.skip_space()
        return self.text.startswith(s, self.pos)

    def match(self, pattern: re.Pattern, expected: str) -> str:
        self.skip_space()
        m = pattern.match(self.text, self.pos)
        if not m:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {expected}, found {found}")
        self.pos = m.end()
        return m.group()

    def selector(self) -> Selector:
        if not self.text.strip():
            raise UserError("empty selector: name a modality, e.g. 'sentinel2' or 'landsat[year>=2015]'")
        terms = [self.term()]
        while self.peek("+"):
            self.pos += 1
            terms.append(self.term())
        self.skip_space()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r} (join terms with '+')")
        return Selector(tuple(terms))

    def term(self) -> Term:
        name = self.match(_NAME, "a modality name")
        if not self.peek("["):
            return Term(name)
        opened = self.pos
        self.pos += 1
        conds = [self.condition()]
        while self.peek(";"):
            self.pos += 1
            conds.append(self.condition())
        if not self.peek("]"):
            if self.pos >= len(self.text):
                raise self.fail(f"missing ']' (to close the '[' at position {opened})")
            raise self.fail(f"expected ';' or ']', found {self.text[self.pos]!r}")
        self.pos += 1
        return Term(name, tuple(conds))

    def condition(self) -> Condition:
        axis = self.match(_NAME, "an axis name (e.g. band, year, patch, variable)")
        self.skip_space()
        # Longest operators first so '>=' is not read as '>' followed by '='.
        op = next((o for o in ("==", *OPERATORS) if self.text.startswith(o, self.pos)), None)
        if op is None:
            raise self.fail(f"expected an operator ({' '.join(OPERATORS)}) after {axis!r}")
        self.pos += len(op)
        values = [self.match(_VALUE, f"a value after {op!r}")]
        while self.peek(","):
            self.pos += 1
            values.append(self.match(_VALUE, "a value after ','"))
        op = "=" if op == "==" else op
        if op in _ORDERED_OPS and len(values) != 1:
            raise self.fail(f"operator {op!r} takes one value, got {len(values)}")
        return Condition(axis, op, tuple(values))


def parse_selector(text: str) -> Selector:
    """Parse a selector (syntax only; names are checked by resolve_selector)."""
    return _Parser(text).selector()


def selector_label(text: str) -> str:
    """Canonical spelling of a selector (whitespace removed, '==' as '='), used as a column name."""
    return str(parse_selector(text))


# --------------------------------------------------------------------------- resolution


def resolve_selector(
    selector: Selector | str,
    modalities: dict,
    groups: dict[str, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """Visible tokens per store modality: {modality: bool [T_m]} for every store modality in
    `modalities` (all False for those the selector does not name). `modalities` maps names to
    {"tokens": T, "axes": {axis: [values]}} (or objects with .tokens / .axes, e.g. the store's meta).
    Terms are OR-ed; conditions inside one bracket are AND-ed."""
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    groups = groups or {}
    masks = {m: np.zeros(_describe(m, d)[0], dtype=bool) for m, d in modalities.items()}
    for term in sel.terms:
        try:
            term_masks = _resolve_term(term, modalities, groups)
        except UserError as err:  # say which selector the problem is in (the CLI may get several)
            raise UserError(f"selector {str(sel)!r}: {err}") from None
        if not any(mask.any() for mask in term_masks.values()):
            raise UserError(f"selector {str(sel)!r}: {str(term)!r} selects no token")
        for m, mask in term_masks.items():
            masks[m] |= mask
    return masks


def _resolve_term(term: Term, modalities: dict, groups: dict) -> dict[str, np.ndarray]:
    if term.name in modalities:
        return {term.name: _term_mask(term, term.name, modalities[term.name])}
    if term.name in groups:
        if term.conditions:
            members = ", ".join(groups[term.name])
            raise UserError(
                f"conditions apply to a store modality, and {term.name!r} is a group "
                f"of {members}; write e.g. {groups[term.name][0]}[{';'.join(map(str, term.conditions))}]"
            )
        out = {}
        for m in groups[term.name]:
            if m not in modalities:
                raise UserError(f"group {term.name!r} names {m!r}, which is not a modality of the store")
            out[m] = np.ones(_describe(m, modalities[m])[0], dtype=bool)
        return out
    raise UserError(
        f"unknown modality {term.name!r}{did_you_mean(term.name, [*modalities, *groups])}; "
        f"modalities: {', '.join(modalities) or '(none)'}"
        + (f"; groups: {', '.join(groups)}" if groups else "")
    )


def _term_mask(term: Term, name: str, desc) -> np.ndarray:
    tokens, axes = _describe(name, desc)
    mask = np.ones(tokens, dtype=bool)
    if not term.conditions:
        return mask
    coords = np.unravel_index(np.arange(tokens), [len(v) for v in axes.values()]) if axes else ()
    axis_pos = {a: i for i, a in enumerate(axes)}
    for cond in term.conditions:
        if cond.axis not in axes:
            raise UserError(
                f"modality {name!r} has no axis {cond.axis!r}"
                f"{did_you_mean(cond.axis, list(axes))}; its axes: {', '.join(axes) or '(none)'}"
            )
        hit = _value_mask(cond, name, list(axes[cond.axis]))
        mask &= hit[coords[axis_pos[cond.axis]]]
    return mask


def _describe(name: str, desc) -> tuple[int, dict[str, list]]:
    """(tokens, axes) of a modality description (dict or object), checked against the layout rule."""
    get = desc.get if isinstance(desc, dict) else lambda k, d=None: getattr(desc, k, d)
    tokens, axes = int(get("tokens")), dict(get("axes", None) or {})
    if axes and int(np.prod([len(v) for v in axes.values()])) != tokens:
        sizes = " x ".join(f"{a}({len(v)})" for a, v in axes.items())
        raise UserError(f"modality {name!r}: axes {sizes} do not multiply to its {tokens} tokens")
    return tokens, axes


def _value_mask(cond: Condition, modality: str, values: list) -> np.ndarray:
    """bool [len(values)]: the axis values the condition keeps."""
    if _is_numeric(values):
        hit = _numeric_mask(cond, modality, np.array([float(v) for v in values]), values)
    elif cond.op in _ORDERED_OPS:
        raise UserError(
            f"{cond.op!r} compares numbers, but axis {cond.axis!r} of {modality!r} "
            f"holds names ({_listing(values)}); use '=' or '!='"
        )
    else:
        hit = np.zeros(len(values), dtype=bool)
        for v in cond.values:
            hit |= _name_mask(cond, modality, v, values)
    return ~hit if cond.op == "!=" else hit


def _numeric_mask(cond: Condition, modality: str, axis: np.ndarray, values: list) -> np.ndarray:
    numbers = []
    for v in cond.values:
        if not _NUMBER.fullmatch(v):
            raise UserError(
                f"axis {cond.axis!r} of {modality!r} holds numbers and {v!r} is not one; "
                f"values: {_listing(values)}"
            )
        numbers.append(float(v))
    if cond.op in _ORDERED_OPS:
        x = numbers[0]
        return {">=": axis >= x, "<=": axis <= x, ">": axis > x, "<": axis < x}[cond.op]
    hit = np.zeros(len(axis), dtype=bool)
    for v, x in zip(cond.values, numbers):
        if not (axis == x).any():
            raise UserError(_unknown_value(cond, modality, v, values))
        hit |= axis == x
    return hit


def _name_mask(cond: Condition, modality: str, value: str, values: list) -> np.ndarray:
    names = [str(v) for v in values]
    if value in names:
        return np.array([n == value for n in names])
    grid = _patch_grid(names)
    if grid is not None and value in ("center", "edge"):
        return _patch_region(names, grid, value)
    raise UserError(_unknown_value(cond, modality, value, values))


def _patch_grid(names: list[str]) -> tuple[int, int] | None:
    """(rows, cols) when every value is a patch id r<i>c<j>, else None."""
    cells = [_PATCH.fullmatch(n) for n in names]
    if not names or not all(cells):
        return None
    return max(int(c.group(1)) for c in cells) + 1, max(int(c.group(2)) for c in cells) + 1


def _middle(n: int) -> set[int]:
    # Even sides have no single middle: take the two central rows/cols (4x4 -> rows 1, 2).
    return {n // 2 - 1, n // 2} if n % 2 == 0 else {n // 2}


def _patch_region(names: list[str], grid: tuple[int, int], region: str) -> np.ndarray:
    rows, cols = grid
    out = np.zeros(len(names), dtype=bool)
    for i, n in enumerate(names):
        r, c = map(int, _PATCH.fullmatch(n).groups())
        if region == "center":
            out[i] = r in _middle(rows) and c in _middle(cols)
        else:
            out[i] = r in (0, rows - 1) or c in (0, cols - 1)
    return out


def _is_numeric(values: list) -> bool:
    """An axis is numeric (years, depths) when every value is a number or a numeric string."""

    def num(v) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, (int, float, np.integer, np.floating)):
            return True
        return isinstance(v, str) and bool(_NUMBER.fullmatch(v))

    return bool(values) and all(num(v) for v in values)


def _unknown_value(cond: Condition, modality: str, value: str, values: list) -> str:
    names = [str(v) for v in values]
    extra = " (or center, edge)" if _patch_grid(names) else ""
    if _is_numeric(values):  # a long year list is cut: give its range too
        numbers = [float(v) for v in values]
        extra = f" (range {_fmt(min(numbers))}..{_fmt(max(numbers))})"
    return (
        f"unknown {cond.axis} {value!r} for {modality!r}{did_you_mean(value, names)}; "
        f"values: {_listing(values)}{extra}"
    )


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _listing(values: list) -> str:
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- modality subsets


def all_subsets(names: list[str]) -> list[tuple[str, ...]]:
    """The 2^M - 1 non-empty subsets of `names`, by size, then in the order of `names`
    (['a','b','c'] -> a, b, c, a+b, a+c, b+c, a+b+c)."""
    names = list(names)
    return [s for k in range(1, len(names) + 1) for s in itertools.combinations(names, k)]


def subset_label(subset) -> str:
    """'a+b': a subset's name, which is also a valid selector."""
    return "+".join(subset)
