"""The fqlower command."""

from __future__ import annotations

import subprocess
import sys

import fqlower
from fqlower.cli import main


def test_demo_lowers_checks_against_torch_and_saves(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "equal to torch's lowering (graph, module types, state_dict, outputs): True" in text
    assert "caller's model unchanged: True" in text
    assert text.rstrip().endswith("OK")
    for name in fqlower.default_pipeline().names:
        assert name in text
    log = fqlower.ChangeLog.loads((out / "changes.jsonl").read_text())
    assert {change.pass_name for change in log.changes} >= {"lower-static-modules", "lower-static-functionals", "fold-weights"}
    assert (out / "lowered.pt").stat().st_size > 0


def test_help_and_usage_errors_exit_as_argparse_does():
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
