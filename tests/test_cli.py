"""The fqlower command."""

from __future__ import annotations

import subprocess
import sys

import torch

import fqlower
from fqlower.cli import main
from fqlower.compare import ModelSnapshot, lowering_differences
from fqlower.examples import demo_inputs, demo_reference_model
from fqlower.reference import torch_lowering


def test_demo_lowers_checks_against_torch_and_saves(capsys, tmp_path):
    """The demo's verdict is checked here, not taken from its output: what it saved
    (the lowered module, and the change log replayed on the same reference model)
    equals torch's lowering of the demo model, computed by the test itself."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "equal to torch's lowering (graph, module types, state_dict, outputs): True" in text
    assert "caller's model unchanged: True" in text
    assert text.rstrip().endswith("OK")
    for name in fqlower.default_pipeline().names:
        assert name in text

    reference = demo_reference_model("fbgemm")  # the demo's model and calibration: deterministic
    snapshot = ModelSnapshot.of(reference.module)
    expected = torch_lowering(reference)
    saved = torch.load(out / "lowered.pt", weights_only=False)
    log_text = (out / "changes.jsonl").read_text()
    replayed = fqlower.replay(reference.module, log_text, reference.qconfig_map, reference.node_name_to_scope)
    assert snapshot.differences(reference.module) == []
    for seed in (1, 2, 3):
        inputs = demo_inputs(seed)
        assert lowering_differences(expected, saved, inputs) == []
        assert lowering_differences(expected, replayed.module, inputs) == []
    assert (out / "program.txt").read_text() == fqlower.format_program(replayed.program) + "\n"
    log = fqlower.ChangeLog.loads(log_text)
    assert {change.pass_name for change in log.changes} >= {"lower-static-modules", "lower-static-functionals", "fold-weights"}


def test_help_and_usage_errors_exit_as_argparse_does():
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout
    done = subprocess.run([sys.executable, "-m", "fqlower.cli", "frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
