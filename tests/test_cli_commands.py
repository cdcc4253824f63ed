"""The fqlower commands end to end on the demo model: lower (from a float model file,
saving the reference) -> lower again from the saved reference -> replay -> explain ->
diff -> bisect; errors and exit codes. Also fqlower.convert_fx, the drop-in for
torch's convert_fx."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fqlower
from fqlower import cli
import fqlower.cli.lowering  # noqa: F401  (cli.lowering: the stage whose threshold a test lowers)
from fqlower.compare import ModelSnapshot, lowering_differences
from fqlower.errors import FqlowerError

MODEL_FILE = """\
import torch
from fqlower.examples import DemoNet


def model():
    torch.manual_seed(0)
    return DemoNet()
"""
INPUTS = (torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7)),)


def run(*argv: str) -> tuple[int, str, str]:
    """`fqlower ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def fingerprint_in(text: str) -> str:
    return re.search(r"^fingerprint: ([0-9a-f]{64})$", text, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """`fqlower lower --model net.py:model --save-reference ...` run once for the module."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "net.py").write_text(MODEL_FILE)
    result = run(
        "lower", "--model", f"{folder / 'net.py'}:model", "--qconfig", "fbgemm", "--input-shape", "16,3,16,16",
        "--save-reference", folder / "ref.pt", "-o", folder / "lowered.pt", "--log", folder / "changes.jsonl",
    )  # fmt: skip
    return folder, result


def test_lower_from_a_model_file_saves_reference_module_and_log(work):
    folder, (code, out, err) = work
    assert code == 0, err
    assert f"wrote {folder / 'ref.pt'} (reference model) and {folder / 'ref.maps.pt'}" in out
    assert re.search(r"^\s+6\s+lower-binary-ops\s+1\s+0\s", out, re.MULTILINE)
    assert "reference: 53 nodes -> lowered: 23 nodes" in out
    assert "quantizing" in err and "lowering 53 nodes through 12 passes" in err  # progress on stderr
    log = fqlower.ChangeLog.loads((folder / "changes.jsonl").read_text())
    assert fingerprint_in(out) == log.header.output
    # the saved reference is what was lowered, with its maps and example inputs
    reference = torch.load(folder / "ref.pt", weights_only=False)
    maps = torch.load(folder / "ref.maps.pt", weights_only=False)
    assert set(maps) == {"qconfig_map", "node_name_to_scope", "example_inputs"}
    again = fqlower.lower(reference, maps["qconfig_map"], maps["node_name_to_scope"])
    assert again.log.dumps() == log.dumps()
    # the lowered module loads with plain torch.load, quantized convs included, and runs
    lowered = torch.load(folder / "lowered.pt", weights_only=False)
    assert isinstance(lowered.get_submodule("stem.0"), torch.ao.nn.intrinsic.quantized.ConvReLU2d)
    assert lowering_differences(again.module, lowered, INPUTS) == []  # state_dict too: hooks kept
    lowered.load_state_dict(again.module.state_dict())


def test_lower_a_saved_reference_gives_the_same_log(work, tmp_path):
    folder, _ = work
    code, out, err = run("lower", folder / "ref.pt", "--log", tmp_path / "again.jsonl")
    assert code == 0, err
    assert (tmp_path / "again.jsonl").read_bytes() == (folder / "changes.jsonl").read_bytes()
    assert "note: no maps file" not in err  # found beside ref.pt
    # without its maps the model still lowers, with a note saying so
    shutil.copy(folder / "ref.pt", tmp_path / "alone.pt")
    code, out, err = run("lower", tmp_path / "alone.pt")
    assert code == 0 and "note: no maps file" in err and "(pass --maps)" in err
    code, _, _ = run("lower", tmp_path / "alone.pt", "--maps", folder / "ref.maps.pt", "--log", tmp_path / "with_maps.jsonl")
    assert code == 0 and (tmp_path / "with_maps.jsonl").read_bytes() == (folder / "changes.jsonl").read_bytes()


def test_replay_reproduces_the_lowering(work, tmp_path):
    folder, (_, lowered_out, _) = work
    code, out, err = run("replay", folder / "ref.pt", folder / "changes.jsonl", "-o", tmp_path / "replayed.pt")
    assert code == 0, err
    assert "every fingerprint matches" in out
    assert fingerprint_in(out) == fingerprint_in(lowered_out)
    replayed = torch.load(tmp_path / "replayed.pt", weights_only=False)
    lowered = torch.load(folder / "lowered.pt", weights_only=False)
    assert lowering_differences(lowered, replayed, INPUTS) == []


def test_explain_with_and_without_a_log(work):
    folder, _ = work
    code, with_log, err = run("explain", folder / "ref.pt", "--log", folder / "changes.jsonl")
    assert code == 0, err
    assert "replaying 16 changes" in err
    assert "%flatten" in with_log and "coverage: 4 of 4 weighted ops" in with_log
    code, lowered_now, _ = run("explain", folder / "ref.pt")
    assert code == 0 and lowered_now == with_log


def test_diff_text_dot_and_svg(work, tmp_path):
    folder, _ = work
    code, out, err = run("diff", folder / "ref.pt")
    assert code == 0, err
    assert out.startswith("--- input\n+++ output\n@@ ")
    assert "+%linear = torch.ops.quantized.linear(%quantize_per_tensor_5, %_packed_weight_0, %_scale_4, %_zero_point_4)" in out
    code, out, err = run("diff", folder / "ref.pt", "--pass", "lower-binary-ops", "--dot", tmp_path / "d.dot", "-q")
    assert code == 0 and err == ""  # --quiet
    assert out.splitlines()[:2] == ["--- before lower-binary-ops (step 6)", "+++ after lower-binary-ops (step 6)"]
    assert "+%quantize_per_tensor_3 = torch.ops.quantized.add_relu(%block_0, %stem_0, %_scale_0, %_zero_point_0)" in out
    dot = (tmp_path / "d.dot").read_text()
    assert dot.startswith("digraph fqlower_diff {") and "quantize_per_tensor_3 [" in dot
    code, out, err = run("diff", folder / "ref.pt", "--pass", "2")  # a step that changes nothing
    assert code == 0 and out == "" and "no differences" in err
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` is not installed (apt-get install graphviz): SVG not checked")
    code, _, err = run("diff", folder / "ref.pt", "--pass", "lower-binary-ops", "--svg", tmp_path / "d.svg")
    assert code == 0, err
    root = ET.fromstring((tmp_path / "d.svg").read_bytes())
    titles = {element.text for element in root.iter("{http://www.w3.org/2000/svg}title")}
    assert {"quantize_per_tensor_3", "add", "relu"} <= titles


def test_bisect_clean_and_tampered_logs(work, tmp_path):
    folder, _ = work
    code, out, err = run("bisect", folder / "ref.pt", folder / "changes.jsonl", "--tolerance", "1e-3")
    assert code == 0, err
    assert "no culprit" in out
    # make the residual add read block_0 twice instead of block_0 and stem_0
    text = (folder / "changes.jsonl").read_text()
    tampered = text.replace('{"$ref":"block_0"},{"$ref":"stem_0"}', '{"$ref":"block_0"},{"$ref":"block_0"}')
    assert tampered != text
    (tmp_path / "tampered.jsonl").write_text(tampered)
    code, out, err = run("bisect", folder / "ref.pt", tmp_path / "tampered.jsonl", "--tolerance", "1e-3")
    assert code == 1, err  # culprits found: the check failed
    assert "changes together break the tolerance 0.001" in out
    assert "lower-binary-ops/lower-binary-ops at 'quantize_per_tensor_3'" in out
    assert "bisecting 16 changes" in err and "  test 3: narrowing" in err  # progress
    # replay refuses the tampered log; the structural hash names the change
    code, out, err = run("replay", folder / "ref.pt", tmp_path / "tampered.jsonl")
    assert code == 1 and err.splitlines()[-1].startswith("fqlower: error: change 5 (lower-binary-ops/lower-binary-ops at 'quantize_per_tensor_3')")


def test_bisect_inputs_from_flags_and_files(work, tmp_path):
    folder, _ = work
    code, out, _ = run("bisect", folder / "ref.pt", folder / "changes.jsonl", "--tolerance", "1", "--input-shape", "2,3,8,8")
    assert code == 0 and "no culprit" in out
    torch.save(INPUTS, tmp_path / "inputs.pt")
    code, out, _ = run("bisect", folder / "ref.pt", folder / "changes.jsonl", "--tolerance", "1", "--inputs", tmp_path / "inputs.pt")
    assert code == 0 and "no culprit" in out
    torch.save({"qconfig_map": {}, "node_name_to_scope": {}}, tmp_path / "bare.maps.pt")
    code, _, err = run("bisect", folder / "ref.pt", folder / "changes.jsonl", "--tolerance", "1", "--maps", tmp_path / "bare.maps.pt")
    assert code == 1 and "bisect needs inputs" in err


def test_big_models_report_each_pass(work, monkeypatch):
    folder, _ = work
    monkeypatch.setattr(cli.lowering, "LARGE_MODEL_NODES", 10)
    code, _, err = run("lower", folder / "ref.pt")
    assert code == 0
    assert "  [1/12] lower-static-modules" in err and "  [12/12] eliminate-dead-code" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "{d}/missing.pt", "{d}/changes.jsonl"], "fqlower: error: reference model {d}/missing.pt: no such file"),
        (["replay", "{d}/ref.pt", "{d}/corrupt.jsonl"], "fqlower: error: {d}/corrupt.jsonl: change log line 2 is not valid JSON: "),
        (["replay", "{d}/ref.pt", "{d}/missing.jsonl"], "fqlower: error: change log {d}/missing.jsonl: no such file"),
        (["lower", "{d}/changes.jsonl"], "fqlower: error: cannot read reference model {d}/changes.jsonl: UnpicklingError: "),
        (["lower", "{d}/ref.maps.pt"], "fqlower: error: {d}/ref.maps.pt holds a dict, not a torch.fx.GraphModule"),
        (["diff", "{d}/ref.pt", "--pass", "nope"], "fqlower: error: no pass named 'nope'"),
        (["lower", "--model", "{d}/net.py:Nope", "--input-shape", "1,3,8,8"], "fqlower: error: model file {d}/net.py defines no 'Nope'"),
    ],
)
def test_errors_exit_1_with_one_line_and_no_traceback(work, argv, message):
    folder, _ = work
    corrupt = folder / "corrupt.jsonl"
    corrupt.write_text((folder / "changes.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    code, out, err = run(*(arg.format(d=folder) for arg in argv))
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("fqlower: error: ")]
    assert len(errors) == 1 and errors[0].startswith(message.format(d=folder)), err
    assert err.splitlines()[-1] == errors[0] and "Traceback" not in err  # one line, last, no traceback
    code, out, quiet = run(*(arg.format(d=folder) for arg in argv), "-q")
    assert code == 1 and quiet == errors[0] + "\n"


def test_debug_shows_the_exception(work):
    folder, _ = work
    with pytest.raises(FqlowerError, match="no such file"):
        cli.main(["replay", str(folder / "missing.pt"), str(folder / "changes.jsonl"), "--debug"])


def test_usage_errors_exit_2_and_help_exits_0(work, capsys):
    folder, _ = work
    assert cli.main(["lower"]) == 2
    assert "give either REFERENCE" in capsys.readouterr().err
    assert cli.main(["lower", str(folder / "ref.pt"), "--input-shape", "1,3,8,8"]) == 2
    assert "--input-shape goes with --model" in capsys.readouterr().err
    assert cli.main(["bisect", str(folder / "ref.pt"), str(folder / "changes.jsonl")]) == 2
    assert "--tolerance" in capsys.readouterr().err
    assert cli.main(["lower", "--model", "x.py", "--input-shape", "1,a"]) == 2
    for command in ("demo", "lower", "replay", "explain", "bisect", "diff"):
        assert cli.main([command, "--help"]) == 0
        assert f"usage: fqlower {command}" in capsys.readouterr().out


def test_as_a_process_errors_are_one_line_without_traceback(work, tmp_path):
    folder, _ = work
    (tmp_path / "bad.jsonl").write_text('{"kind": "header", "schema": 99}\n')
    done = subprocess.run(
        [sys.executable, "-m", "fqlower.cli", "explain", folder / "ref.pt", "--log", tmp_path / "bad.jsonl", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"fqlower: error: {tmp_path / 'bad.jsonl'}: change log has schema 99; this fqlower reads schema 1 and older: upgrade fqlower"
    ]


# --- fqlower.convert_fx ------------------------------------------------------------------------


class Functional(nn.Module):
    """Functional linear and conv with their own parameters, and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.zeros(4))
        self.fc_w = nn.Parameter(torch.randn(5, 4) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, self.w, self.b, (1, 1), (1, 1), (1, 1), 1))
        y = y + y
        return F.linear(F.adaptive_avg_pool2d(y, 1).flatten(1), self.fc_w)


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.fc(y)


def _recipes():
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        get_default_qconfig_mapping,
    )

    from fqlower.examples import DemoNet

    image = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)
    sequence = (torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(2)),)
    return {
        "static-DemoNet-fbgemm": (DemoNet, lambda: get_default_qconfig_mapping("fbgemm"), image),
        "static-Functional-qnnpack": (Functional, lambda: get_default_qconfig_mapping("qnnpack"), image),
        "dynamic-LSTM-Linear": (Recurrent, lambda: QConfigMapping().set_global(default_dynamic_qconfig), sequence),
    }


def _prepared(name: str, model: nn.Module | None = None):
    from torch.ao.quantization.quantize_fx import prepare_fx

    from fqlower.reference import quiet_torch_quantization

    cls, recipe, inputs = _recipes()[name]
    torch.manual_seed(0)
    with quiet_torch_quantization():
        prepared = prepare_fx((model or cls()).eval(), recipe(), inputs)
        with torch.no_grad():
            prepared(*inputs)
    return prepared, inputs


@pytest.mark.parametrize("name", list(_recipes()))
@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")  # torch's reference LSTM
@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")
def test_convert_fx_equals_torchs_and_leaves_the_prepared_model_alone(name):
    from torch.ao.quantization.quantize_fx import convert_fx as torch_convert_fx

    from fqlower.convert import convert_fx

    prepared, inputs = _prepared(name)
    snapshot = ModelSnapshot.of(prepared)
    meta = copy.deepcopy(prepared.meta)
    ours = convert_fx(prepared)
    assert snapshot.differences(prepared) == []
    assert prepared.meta.keys() == meta.keys() and "_observed_graph_module_attrs" in prepared.meta
    theirs = torch_convert_fx(copy.deepcopy(prepared))
    assert lowering_differences(theirs, ours, inputs) == []
    assert sorted(ours.meta) == sorted(theirs.meta)  # observed-module attrs popped as torch does
    assert not any(hasattr(module, "qconfig") for module in ours.modules())  # _remove_qconfig ran


def test_convert_fx_arguments_and_preserved_attributes():
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx as torch_convert_fx

    from fqlower.convert import convert_fx

    prepared, inputs = _prepared("static-Functional-qnnpack")
    prepared.note = {"owner": "me"}
    config = ConvertCustomConfig().set_preserved_attributes(["note"])
    ours = convert_fx(prepared, convert_custom_config=config, keep_original_weights=True, _remove_qconfig=False)
    theirs = torch_convert_fx(copy.deepcopy(prepared), convert_custom_config=config, keep_original_weights=True, _remove_qconfig=False)
    assert ours.note is prepared.note  # the caller's object, as torch keeps it
    assert lowering_differences(theirs, ours, inputs) == []
    assert ours.original_weights_lookup.keys() == theirs.original_weights_lookup.keys()
    with pytest.raises(fqlower.UnsupportedInput, match="expects the GraphModule prepare_fx returned"):
        convert_fx(Functional())


class IntStrideConv(Functional):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, self.b, 1, 1)  # ints for a 2-d conv: torch's prepack call crashes


def test_convert_fx_lowers_what_torchs_crashes_on():
    from torch.ao.quantization.quantize_fx import convert_fx as torch_convert_fx

    from fqlower.convert import convert_fx

    prepared, inputs = _prepared("static-Functional-qnnpack", IntStrideConv())
    with pytest.raises(RuntimeError, match="conv2d_prepack"):
        torch_convert_fx(copy.deepcopy(prepared))
    ours = convert_fx(prepared)
    targets = {node.target for node in ours.graph.nodes}
    assert torch.ops.quantized.conv2d in targets
    assert ours(*inputs).shape == (4, 4, 8, 8)


def test_lowering_hook_restores_torchs_function_and_spares_other_threads():
    from fqlower.convert import _CONVERT_MODULE, lowering_hook

    original = _CONVERT_MODULE.lower_to_fbgemm
    with pytest.raises(RuntimeError, match="boom"), lowering_hook(lambda *a: None):
        assert _CONVERT_MODULE.lower_to_fbgemm is not original
        raise RuntimeError("boom")
    assert _CONVERT_MODULE.lower_to_fbgemm is original

    traced = torch.fx.symbolic_trace(nn.Linear(2, 2))
    calls: list[str] = []
    seen: dict[str, object] = {}

    def other_thread() -> None:  # torch's convert in another thread lowers with torch's function
        seen["result"] = _CONVERT_MODULE.lower_to_fbgemm(copy.deepcopy(traced), {}, {}, False)

    with lowering_hook(lambda model, *rest: calls.append("hook") or model):
        _CONVERT_MODULE.lower_to_fbgemm(traced, {}, {}, False)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert calls == ["hook"] and isinstance(seen["result"], torch.fx.GraphModule)
    assert _CONVERT_MODULE.lower_to_fbgemm is original


def test_replay_refuses_a_log_naming_foreign_callables_unless_trusted(work, tmp_path):
    folder, _ = work
    text = (folder / "changes.jsonl").read_text()
    tampered = text.replace('"torch.ops.quantized.add_relu"', '"torch.neg"')
    assert tampered != text
    (tmp_path / "foreign.jsonl").write_text(tampered)
    code, _, err = run("replay", folder / "ref.pt", tmp_path / "foreign.jsonl")
    assert code == 1 and "names torch.neg, which no fqlower pass writes and the model does not call" in err
    code, _, err = run("replay", folder / "ref.pt", tmp_path / "foreign.jsonl", "--trusted")
    assert code == 1 and "torch.neg" not in err.splitlines()[-1]  # trusted: on to the structural hash check
    assert "hashes to" in err
