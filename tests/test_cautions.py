"""Cautions (fqlower.cautions): a model calibrated with full 8-bit activations (qnnpack's
and onednn's qconfigs) and lowered for the fbgemm or x86 engine, whose linear and conv
kernels can saturate on them, gets one `Caution` in its log naming the ops and the
recipe; `explain` and the CLI show it. The lowering itself stays torch's."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping

import fqlower
from fqlower import ChangeLog, cli
from fqlower.cautions import RECIPE_ENGINE
from fqlower.compare import lowering_differences
from fqlower.explain import explain
from fqlower.log import Caution
from fqlower.reasons import Code
from fqlower.reference import quantized_engine, reference_model, torch_lowering


class ConvLinear(nn.Module):
    """A conv module, a linear module and a functional linear: every static weighted kind."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)
        self.weight = nn.Parameter(torch.randn(3, 5) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).mean((2, 3))
        return F.linear(self.fc(x), self.weight)


def example() -> torch.Tensor:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def reference(recipe: str):
    mapping = QConfigMapping().set_global(default_dynamic_qconfig) if recipe == "dynamic" else get_default_qconfig_mapping(recipe)
    return reference_model(ConvLinear().eval(), (example(),), mapping)


def lowered(recipe: str, engine: str) -> fqlower.Lowering:
    ref = reference(recipe)
    with quantized_engine(engine):
        return fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)


@pytest.mark.parametrize("engine", ["x86", "fbgemm"])
@pytest.mark.parametrize("recipe", ["qnnpack", "onednn"])
def test_full_range_activations_lowered_for_a_saturating_engine_get_one_caution_naming_the_ops(recipe, engine):
    lowering = lowered(recipe, engine)
    (caution,) = lowering.log.cautions
    ops = {change.bindings.get("reference") or change.bindings.get("function") for change in lowering.log.changes}
    assert caution.check == RECIPE_ENGINE
    assert set(caution.nodes) == {"conv", "fc", "linear"} and set(caution.nodes) <= ops
    assert "reduce_range=False" in caution.message and f"the {engine} engine" in caution.message
    assert all(f"%{node}" in caution.message for node in caution.nodes)
    assert f"get_default_qconfig_mapping({engine!r})" in caution.message


@pytest.mark.parametrize(
    ("recipe", "engine"),
    [("qnnpack", "qnnpack"), ("fbgemm", "fbgemm"), ("x86", "x86"), ("fbgemm", "qnnpack"), ("dynamic", "x86")],
)
def test_no_caution_where_the_kernels_cannot_saturate(recipe, engine):
    """qnnpack's kernels accumulate in 32 bits; fbgemm/x86 qconfigs reduce the range;
    dynamic linear quantizes its activations with a reduced range itself."""
    lowering = lowered(recipe, engine)
    assert lowering.log.changes and lowering.log.cautions == ()


def test_a_caution_changes_nothing_in_the_lowering_and_replays_from_its_log():
    ref = reference("qnnpack")
    with quantized_engine("x86"):
        lowering = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)
        expected = torch_lowering(ref)
        assert lowering_differences(expected, lowering.module, (example(),)) == []
    text = lowering.log.dumps()
    assert '"kind":"caution"' in text
    assert ChangeLog.loads(text) == lowering.log and ChangeLog.loads(text).dumps() == text
    replayed = fqlower.replay(ref.module, text, ref.qconfig_map, ref.node_name_to_scope)
    assert replayed.log.cautions == lowering.log.cautions
    assert fqlower.fingerprint(replayed.program) == lowering.log.header.output


def test_a_caution_in_a_log_is_read_strictly():
    header = '{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}'
    caution = '{"kind":"caution","check":"recipe-engine","nodes":"fc","message":"m"}'
    with pytest.raises(fqlower.ChangeLogError, match=r"line 2: nodes: must be a list, got 'fc'"):
        ChangeLog.loads(header + "\n" + caution)
    log = ChangeLog.loads(header + "\n" + caution.replace('"fc"', '["fc"]'))
    assert log.cautions == (Caution("recipe-engine", ("fc",), "m"),) and log.changes == () and log.skips == ()
    assert log.cautions[0].code is Code.AS_TORCH  # every entry has a code: a caution's lowering is torch's


def test_explain_shows_the_caution():
    lowering = lowered("qnnpack", "x86")
    text = explain(lowering).format()
    assert f"caution [{RECIPE_ENGINE}] %conv, %fc, %linear: calibrated with activations of the full 8 bits" in text
    assert "caution" not in explain(lowered("x86", "x86")).format()


def test_the_cli_prints_the_caution_when_it_lowers(tmp_path):
    model_file = tmp_path / "net.py"
    model_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
        "from test_cautions import ConvLinear as Net\n"
    )
    out = io.StringIO()
    with quantized_engine("x86"), contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["lower", "--model", f"{model_file}:Net", "--qconfig", "qnnpack", "--input-shape", "2,3,8,8"])
    assert code == 0
    assert f"caution [{RECIPE_ENGINE}] %conv, %fc, %linear:" in out.getvalue()


def test_the_drop_in_lowering_logs_the_caution_as_a_warning(caplog):
    ref = reference("qnnpack")
    with quantized_engine("x86"), caplog.at_level("WARNING", logger="fqlower"):
        fqlower.lower_to_native_backend(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    (record,) = [record for record in caplog.records if record.name.startswith("fqlower")]
    assert record.levelname == "WARNING" and record.getMessage().startswith(f"caution [{RECIPE_ENGINE}] %conv, %fc, %linear:")
    caplog.clear()
    with quantized_engine("qnnpack"), caplog.at_level("WARNING", logger="fqlower"):
        fqlower.lower_to_native_backend(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert [record for record in caplog.records if record.name.startswith("fqlower")] == []
