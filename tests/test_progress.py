"""Progress and time remaining: right in every epoch, on a terminal and in batch logs."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from miam_cli.cli.common import Progress, epoch_progress

STEP = 2.0  # seconds per simulated training step (a fake clock: no waiting)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _train(bar: Progress, clock: Clock, epochs: int, steps: int, start_epoch: int = 0, check=None):
    callback = epoch_progress(bar)
    for epoch in range(start_epoch, epochs):
        for step in range(1, steps + 1):
            clock.now += STEP
            callback(epoch, step, steps, epochs)
            if check:
                check(epoch, step)


@pytest.mark.parametrize("terminal", [True, False])
def test_time_remaining_is_right_in_every_epoch(terminal):
    console, clock = Console(file=io.StringIO(), force_terminal=terminal, width=100), Clock()
    seen = {}

    def check(epoch, step):
        if step == 3:  # early in every epoch, where the old bar said 0:00:00 from epoch 2 on
            seen[epoch] = bar.remaining()

    with Progress("train", console=console, every=0.0, clock=clock) as bar:
        _train(bar, clock, epochs=3, steps=6, check=check)
    assert seen == {epoch: pytest.approx(((3 - epoch) * 6 - 3) * STEP) for epoch in range(3)}
    if not terminal:
        lines = console.file.getvalue().splitlines()
        assert "train: 9/18 (18s, 0:00:18 left) epoch 2/3" in lines, lines


def test_a_resumed_or_restarted_count_does_not_fake_a_speed():
    console, clock = Console(file=io.StringIO(), force_terminal=True, width=100), Clock()
    with Progress("train", console=console, clock=clock) as bar:
        callback = epoch_progress(bar)
        callback(2, 1, 5, 4)  # resumed in epoch 3: 11 of 20 steps at once, in no time
        assert bar.remaining() is None
        for step in (2, 3):
            clock.now += STEP
            callback(2, step, 5, 4)
        assert bar.remaining() == pytest.approx(7 * STEP)  # from the steps measured, not from the jump
        _train(bar, clock, epochs=2, steps=5)  # the demo's second model: the count goes back to 1/10
        assert bar.remaining() == 0
        clock.now += 100.0
        callback(0, 1, 5, 2)  # a third model after a long pause: the pause does not slow the estimate
        for step in (2, 3):
            clock.now += STEP
            callback(0, step, 5, 2)
        assert bar.remaining() == pytest.approx(7 * STEP)
