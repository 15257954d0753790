"""Selector language: parsing, resolution to token masks, and the error messages users see."""

import numpy as np
import pytest

from miam_cli.errors import UserError
from miam_cli.evaluate.selectors import (
    Condition,
    Selector,
    Term,
    all_subsets,
    parse_selector,
    resolve_selector,
    selector_label,
    subset_label,
)

BANDS = ["red", "green", "blue", "nir"]
PATCHES = [f"r{r}c{c}" for r in range(4) for c in range(4)]
YEARS = list(range(2000, 2021))
VARIABLES = [f"bio{i}" for i in range(1, 20)] + ["elevation"]

MODALITIES = {
    "sentinel2": {"tokens": 64, "axes": {"band": BANDS, "patch": PATCHES}},
    "landsat": {"tokens": 21 * 6, "axes": {"year": YEARS, "band": ["b1", "b2", "b3", "b4", "b5", "b6"]}},
    "bioclim": {"tokens": 21, "axes": {"year": [str(y) for y in YEARS]}},  # years stored as strings
    "tabular": {"tokens": 20, "axes": {"variable": VARIABLES}},
}
GROUPS = {
    "tabular": ["tabular"],
    "sentinel2": ["sentinel2"],
    "timeseries": ["landsat", "bioclim"],
}


def resolve(text):
    return resolve_selector(text, MODALITIES, GROUPS)


def s2_tokens(bands=BANDS, patches=PATCHES):
    # Layout rule: token t = band_index * 16 + patch_index.
    want = np.zeros(64, dtype=bool)
    for b in bands:
        for p in patches:
            want[BANDS.index(b) * 16 + PATCHES.index(p)] = True
    return want


def only(masks, **selected):
    """The named modalities have exactly these masks; every other one is all False."""
    for m, mask in masks.items():
        want = selected.get(m, np.zeros_like(mask))
        np.testing.assert_array_equal(mask, want, err_msg=m)


# --------------------------------------------------------------------------- parsing


def test_parse_tree_and_canonical_label():
    sel = parse_selector(" sentinel2 [ band = red , nir ; patch=center ] + tabular ")
    assert sel == Selector(
        (Term("sentinel2", (Condition("band", "=", ("red", "nir")), Condition("patch", "=", ("center",)))), Term("tabular"))
    )
    assert str(sel) == "sentinel2[band=red,nir;patch=center]+tabular"
    assert selector_label("landsat [ year >= 2015 ]") == "landsat[year>=2015]"
    assert selector_label("landsat[year==2018]") == "landsat[year=2018]"


# --------------------------------------------------------------------------- valid selectors


def test_whole_modality():
    only(resolve("sentinel2"), sentinel2=np.ones(64, bool))


def test_bands():
    only(resolve("sentinel2[band=red,nir]"), sentinel2=s2_tokens(bands=["red", "nir"]))


def test_center_and_edge_patches():
    center = ["r1c1", "r1c2", "r2c1", "r2c2"]
    only(resolve("sentinel2[patch=center]"), sentinel2=s2_tokens(patches=center))
    edge = [p for p in PATCHES if p not in center]
    only(resolve("sentinel2[patch=edge]"), sentinel2=s2_tokens(patches=edge))


def test_center_of_odd_grid():
    patches = [f"r{r}c{c}" for r in range(3) for c in range(3)]
    mods = {"img": {"tokens": 9, "axes": {"patch": patches}}}
    np.testing.assert_array_equal(resolve_selector("img[patch=center]", mods)["img"], np.arange(9) == 4)
    np.testing.assert_array_equal(resolve_selector("img[patch=edge]", mods)["img"], np.arange(9) != 4)


def test_conditions_in_one_bracket_and_together():
    only(resolve("sentinel2[band=red;patch=center]"), sentinel2=s2_tokens(["red"], ["r1c1", "r1c2", "r2c1", "r2c2"]))


def test_years_compare_as_numbers():
    year = np.repeat(YEARS, 6)  # landsat: year is the first axis, band the second
    only(resolve("landsat[year>=2015]"), landsat=year >= 2015)
    only(resolve("landsat[year<2003]"), landsat=year < 2003)
    only(resolve("landsat[year!=2000]"), landsat=year != 2000)
    only(resolve("landsat[year=2018,2019; band=b1]"), landsat=np.isin(year, [2018, 2019]) & (np.arange(126) % 6 == 0))
    only(resolve("bioclim[year>2018]"), bioclim=np.array(YEARS) > 2018)  # string years too


def test_variable_and_union_of_terms():
    only(resolve("tabular[variable=bio1]"), tabular=np.arange(20) == 0)
    only(
        resolve("tabular+landsat[year=2018]"),
        tabular=np.ones(20, bool),
        landsat=np.repeat(YEARS, 6) == 2018,
    )
    only(resolve("sentinel2[band=red]+sentinel2[band=nir]"), sentinel2=s2_tokens(bands=["red", "nir"]))


def test_group_selects_its_modalities_whole():
    only(resolve("timeseries"), landsat=np.ones(126, bool), bioclim=np.ones(21, bool))
    masks = resolve_selector("tabular", MODALITIES)  # no groups: store names only
    assert masks["tabular"].all() and set(masks) == set(MODALITIES)


def test_object_descriptions():
    class Meta:  # e.g. the store's pydantic modality entries
        tokens = 20
        axes = {"variable": VARIABLES}

    assert resolve_selector("tab[variable=elevation]", {"tab": Meta()})["tab"].tolist() == [False] * 19 + [True]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text, pieces",
    [
        ("sentinal2", ["unknown modality 'sentinal2'", "did you mean 'sentinel2'", "modalities: sentinel2, landsat, bioclim, tabular", "groups: tabular, sentinel2, timeseries"]),
        ("sentinel2[bnd=red]", ["no axis 'bnd'", "its axes: band, patch"]),
        ("sentinel2[band=swir]", ["unknown band 'swir'", "values: red, green, blue, nir"]),
        ("sentinel2[patch=middle]", ["unknown patch 'middle'", "r0c0, r0c1", "(or center, edge)"]),
        ("landsat[year=1999]", ["unknown year '1999'", "2000, 2001", "(range 2000..2020)"]),
        ("landsat[year>=recent]", ["holds numbers and 'recent' is not one"]),
        ("sentinel2[band>=red]", ["'>=' compares numbers", "use '=' or '!='"]),
        ("sentinel2[band=red", ["at position 18: missing ']'"]),
        ("sentinel2[band=red nir]", ["expected ';' or ']'", "'n'"]),
        ("sentinel2[band]", ["expected an operator"]),
        ("sentinel2[band=]", ["expected a value"]),
        ("tabular+", ["expected a modality name", "the end"]),
        ("sentinel2 tabular", ["unexpected 't'", "'+'"]),
        ("landsat[year>=2015,2016]", ["takes one value"]),
        ("   ", ["empty selector"]),
        ("landsat[year>2020]", ["'landsat[year>2020]' selects no token"]),
        ("sentinel2[band!=red,green,blue,nir]", ["selects no token"]),
        ("timeseries[year=2018]", ["is a group of landsat, bioclim", "landsat[year=2018]"]),
    ],
)
def test_errors_name_the_bad_piece(text, pieces):
    with pytest.raises(UserError) as err:
        resolve(text)
    assert text.strip() in str(err.value) or "empty" in str(err.value)  # the selector is quoted
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_long_value_lists_are_cut():
    mods = {"many": {"tokens": 50, "axes": {"variable": [f"v{i}" for i in range(50)]}}}
    with pytest.raises(UserError, match=r"v19, \.\.\. \(30 more\)"):
        resolve_selector("many[variable=x]", mods)


def test_inconsistent_axes_are_refused():
    with pytest.raises(UserError, match="do not multiply"):
        resolve_selector("bad", {"bad": {"tokens": 5, "axes": {"band": ["a", "b"]}}})


# --------------------------------------------------------------------------- subsets


def test_all_subsets_order():
    subsets = all_subsets(["tabular", "sentinel2", "timeseries"])
    assert [subset_label(s) for s in subsets] == [
        "tabular",
        "sentinel2",
        "timeseries",
        "tabular+sentinel2",
        "tabular+timeseries",
        "sentinel2+timeseries",
        "tabular+sentinel2+timeseries",
    ]
    assert len(all_subsets(list("abcde"))) == 31
    # A subset label is itself a selector over groups.
    masks = resolve(subset_label(subsets[4]))
    assert masks["tabular"].all() and masks["landsat"].all() and not masks["sentinel2"].any()
