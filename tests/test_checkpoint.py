"""Checkpoints: atomic writes, a format key, and clear errors (file named, exit 2) for bad files."""

from __future__ import annotations

import pytest
import torch

from miam_cli.runs.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model, save_checkpoint
from miam_cli.errors import UserError


def test_round_trip_carries_the_format(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(3.0)}, "step": 7})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["step"] == 7
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_a_checkpoint_without_the_key_is_format_1(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {}}, path)  # written before the key existed
    assert "format" not in load_checkpoint(path)


@pytest.mark.parametrize("content, message", [
    ({"model": {}, "format": CHECKPOINT_FORMAT + 1}, "newer than this miam reads"),
    ([1, 2, 3], "not a miam checkpoint"),
])
def test_foreign_checkpoints_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "x.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_cli_names_a_truncated_or_incomplete_checkpoint_and_exits_2(run_copy, cli):
    best = run_copy / "checkpoints" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k != "model_config"}, best)
    code, _, err = cli("eval-subsets", run_copy, "--device", "cpu")
    assert code == 2 and str(best) in err and "'model_config'" in err and "Traceback" not in err
    best.write_bytes(best.read_bytes()[:100])
    code, _, err = cli("eval-subsets", run_copy, "--device", "cpu")
    assert code == 2 and str(best) in err and "cannot load checkpoint" in err and "Traceback" not in err
    assert not (run_copy / "eval" / "subsets.csv").exists()  # nothing half-written


def test_trained_runs_write_the_format(tiny_run):
    _, ckpt = load_model(tiny_run)
    assert ckpt["format"] == CHECKPOINT_FORMAT
