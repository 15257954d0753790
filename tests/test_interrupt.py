"""Ctrl-C is the user's choice, not a crash: one line, exit 130, no traceback and no crash log."""

import os
import signal
import subprocess
import sys


def _default_sigint():
    # a terminal delivers Ctrl-C to a process whose SIGINT is the default; a test run started in the
    # background (`make test &`, some CI runners) passes SIGINT ignored on, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_inside_a_command_exits_130_with_one_line(tmp_path):
    logs = tmp_path / "logs"
    env = {**os.environ, "MIAM_LOG_DIR": str(logs)}
    proc = subprocess.Popen([sys.executable, "-m", "miam_cli", "synth", "geoplant", str(tmp_path / "raw"), "--surveys", "50000",
                             "--species", "50"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    try:
        for line in proc.stderr:  # wait until the command itself runs (its progress line), not start-up
            if line.startswith("synth geoplant:"):
                break
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted: miam synth geoplant (Ctrl-C)" in rest
    assert "Traceback" not in rest and "unexpected" not in rest
    assert not logs.exists() or not list(logs.iterdir())
