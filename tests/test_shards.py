"""--shard I/N, one convention for prepare, eval-subsets, attribute, predict and map (miam_cli.shards)."""

from __future__ import annotations

import pytest

from miam_cli.errors import UserError
from miam_cli.shards import complete_shard_files, contiguous, owned, owned_items, parse_shard, requested_shard, shard_name


@pytest.mark.parametrize("count,n", [(0, 3), (7, 1), (7, 3), (10, 4), (3, 5)])
def test_the_shards_of_a_work_cover_it_once(count, n):
    """Round-robin units (chunks, tiles, subsets) and contiguous rows: every unit in exactly one shard."""
    dealt = [u for i in range(n) for u in owned(count, (i, n))]
    assert sorted(dealt) == list(range(count))
    rows = [r for i in range(n) for r in contiguous(count, (i, n))]
    assert rows == list(range(count))  # in order: shard files join back into the unsharded table
    assert owned(count, None) == list(range(count)) and list(contiguous(count, None)) == list(range(count))
    assert owned_items(list("abcdefg"), (1, 3)) == ["b", "e"]


def test_slurm_array_variables_name_the_shard_unless_merging(monkeypatch):
    lines = []
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")  # --array=3-6: task ids count from 3
    assert requested_shard(None, merge=False, log=lines.append) == (2, 4)
    assert lines == ["--shard 2/4 (from SLURM_ARRAY_TASK_ID/COUNT)"]
    assert requested_shard("1/2", merge=False) == (1, 2)  # --shard wins over the environment
    assert requested_shard(None, merge=True) is None  # --merge joins every shard's file
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert requested_shard(None, merge=False) is None and parse_shard(None) == (0, 1)


def test_merge_needs_every_shard_file_of_one_count(tmp_path):
    for i in range(3):
        (tmp_path / shard_name("subsets-test", (i, 3), ".csv")).write_text("x")
    assert [f.name for f in complete_shard_files(tmp_path, "subsets-test", ".csv", "eval-subsets")] == [
        "subsets-test-000-of-003.csv", "subsets-test-001-of-003.csv", "subsets-test-002-of-003.csv"]
    (tmp_path / shard_name("subsets-test", (0, 2), ".csv")).write_text("x")
    with pytest.raises(UserError, match="different shard counts"):
        complete_shard_files(tmp_path, "subsets-test", ".csv", "eval-subsets")
    (tmp_path / "subsets-test-000-of-002.csv").unlink()
    (tmp_path / "subsets-test-001-of-003.csv").unlink()
    with pytest.raises(UserError, match="2 of 3 shard files present"):
        complete_shard_files(tmp_path, "subsets-test", ".csv", "eval-subsets")
    with pytest.raises(UserError, match="no shard files .*run attribute --shard I/N first"):
        complete_shard_files(tmp_path, "modalities-global-test", ".json", "attribute")
