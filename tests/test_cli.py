"""The fqlower command."""

from __future__ import annotations

import subprocess
import sys

from fqlower.cli import main


def test_demo_round_trips_the_built_in_example(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "outputs bit-identical:   True" in out and out.rstrip().endswith("OK")


def test_help_and_usage_errors_exit_as_argparse_does():
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
