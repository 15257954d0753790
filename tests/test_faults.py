"""The fault-injection campaign (cases in tests/fault_cases.py): every case must be handled — the
expected exit code, a message naming the file or key, no traceback, nothing lost, nothing accepted
silently. The fast cases run in `make test`; kill points, a real full disk, the 40 bit flips and the
other slow cases run under `make test-slow` (and `python benchmarks/fault_suite.py` prints the table).
"""

from __future__ import annotations

import os

import pytest
import torch

import fault_cases as F
from miam_cli.runs.checkpoint import PENDING_BEST, checkpoint_bytes, load_checkpoint, reconcile

CASES = F.all_cases() + F.bitflip_cases()
FAST = [c for c in CASES if c.fast]
SLOW = [c for c in CASES if not c.fast] + F.process_cases()


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return F.build_base(tmp_path_factory.mktemp("fault-base"))


def _assert_handled(case, base, folder):
    verdict = F.run_case(case, base, folder)
    if verdict.outcome == "skipped":
        pytest.skip(verdict.why)
    assert verdict.outcome == "handled", f"{verdict.outcome}: {verdict.why}"


@pytest.mark.parametrize("case", FAST, ids=lambda c: c.name)
def test_fault_is_handled(case, base, tmp_path):
    _assert_handled(case, base, tmp_path / "case")


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=lambda c: c.name)
def test_slow_fault_is_handled(case, base, tmp_path):
    _assert_handled(case, base, tmp_path / "case")


def test_the_campaign_covers_the_issue():
    """At least the cases the issue lists, in every group (a guard against the suite shrinking)."""
    groups = {}
    for c in CASES + F.process_cases():
        groups[c.group] = groups.get(c.group, 0) + 1
    assert len(CASES) + len(F.process_cases()) >= 150
    for group in ("raw data", "paths", "specs", "recipes", "checkpoints", "stores", "cli", "disk", "commit", "kill -9",
                  "bit flips", "signals", "resources", "concurrency", "training", "predict", "maps", "synth", "like"):
        assert groups.get(group, 0) >= 1, group
    assert groups["bit flips"] == 40


# ---------------------------------------------------------------- the epoch commit, state by state
def _ckpt(epoch: int, best_epoch: int | None, weight: float, step: int = 0) -> dict:
    progress = {"epoch": epoch, "step_in_epoch": step, "best": 0.5 + epoch / 100}
    if best_epoch is not None:
        progress["best_epoch"] = best_epoch
    rows = [{"epoch": e, "val_auc": 0.5 + e / 100} for e in range(1, epoch + 1)]
    return {"model": {"w": torch.full((2,), weight)}, "progress": progress, "metrics": rows, "task": "multilabel"}


def _write(path, ckpt):
    path.write_bytes(checkpoint_bytes(ckpt))


def _weight(path) -> float:
    return float(load_checkpoint(path)["model"]["w"][0])


def test_a_pending_best_is_finished_when_last_pt_vouches_for_it(tmp_path):
    """Crash after last.pt (epoch 3, the best) was committed, before the pending best was renamed."""
    _write(tmp_path / "last.pt", _ckpt(3, 3, 3.0))
    _write(tmp_path / "best.pt", _ckpt(2, 2, 2.0))
    _write(tmp_path / PENDING_BEST.format(epoch=3), _ckpt(3, 3, 3.0))
    reconcile(tmp_path, load_checkpoint(tmp_path / "last.pt"), log=lambda *_: None)
    assert _weight(tmp_path / "best.pt") == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_pending_best_of_an_uncommitted_epoch_is_discarded(tmp_path):
    """Crash before last.pt of epoch 3 was renamed: epoch 3 is redone, best.pt stays epoch 2's."""
    _write(tmp_path / "last.pt", _ckpt(2, 2, 2.0))
    _write(tmp_path / "best.pt", _ckpt(2, 2, 2.0))
    _write(tmp_path / PENDING_BEST.format(epoch=3), _ckpt(3, 3, 3.0))
    (tmp_path / ".last.pt.abcd.tmp").write_bytes(b"half a file")
    reconcile(tmp_path, load_checkpoint(tmp_path / "last.pt"), log=lambda *_: None)
    assert _weight(tmp_path / "best.pt") == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_stale_best_left_by_the_old_commit_order_is_rebuilt(tmp_path):
    """Runs written before the commit order (last.pt renamed before best.pt, no best_epoch): a crash
    between the renames left best.pt an epoch behind; resume rebuilds it from last.pt."""
    _write(tmp_path / "last.pt", _ckpt(3, None, 3.0))
    _write(tmp_path / "best.pt", _ckpt(2, None, 2.0))
    reconcile(tmp_path, load_checkpoint(tmp_path / "last.pt"), log=lambda *_: None)
    assert _weight(tmp_path / "best.pt") == 3.0


def test_a_best_of_an_earlier_epoch_is_kept_when_it_is_the_best(tmp_path):
    last = _ckpt(3, 2, 3.0)
    _write(tmp_path / "last.pt", last)
    _write(tmp_path / "best.pt", _ckpt(2, 2, 2.0))
    reconcile(tmp_path, load_checkpoint(tmp_path / "last.pt"), log=lambda *_: None)
    assert _weight(tmp_path / "best.pt") == 2.0


def test_a_mid_epoch_last_pt_never_becomes_best(tmp_path):
    """Preempted mid-epoch: last.pt is k steps past the best epoch, so it cannot stand in for best.pt."""
    _write(tmp_path / "last.pt", _ckpt(3, 3, 3.5, step=4))
    reconcile(tmp_path, load_checkpoint(tmp_path / "last.pt"), log=lambda *_: None)
    assert not (tmp_path / "best.pt").exists()


def test_an_orphan_best_without_last_pt_is_removed(tmp_path):
    """Crash in the first epoch's commit, after the pending best and before last.pt: start again."""
    _write(tmp_path / PENDING_BEST.format(epoch=1), _ckpt(1, 1, 1.0))
    reconcile(tmp_path, None, log=lambda *_: None)
    assert os.listdir(tmp_path) == []
