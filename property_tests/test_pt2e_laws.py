"""The PT2E front end's law, on generated models (property_tests/models.py's generator,
its float models quantized with PT2E instead of FX).

Each drawn float model is exported, prepared with torchao's X86InductorQuantizer,
calibrated and converted (`fqlower.cli.pt2e.pt2e_converted`); models that do not export
or quantize end there, counted. On the rest:

- `lower_pt2e` raises no error but an FqlowerError that names the node, and leaves the
  converted model as it was;
- its lowered model computes what torchao's lowered model computes (within 1e-4 of the
  output range), or is no further from the converted model than torchao's, or, where
  torchao's lowered model fails to run, is within 1e-4 of the range of the converted one;
- it has at least as many native int8 ops as torchao's.
"""

from __future__ import annotations

import copy

import torch
from models import float_models
from reach import run_law

import fqlower
from fqlower.cli.pt2e import pt2e_converted, quiet, torchao_api
from fqlower.compare import ModelSnapshot

# the generator's block kinds PT2E's X86 quantizer annotates, and the ones around them
PT2E_KINDS = ("conv", "linear", "relu", "hardtanh", "pool", "binary", "cat", "flatten", "functional_conv", "functional_linear")
BATCH = 8


def floats(result):
    return [t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def distance(a, b):
    return max((float((x - y).abs().max()) for x, y in zip(a, b) if x.numel()), default=0.0)


def largest(values):
    return max((float(t.abs().max()) for t in values if t.numel()), default=0.0)


def int8_ops(module):
    return sum(1 for node in module.graph.nodes if node.op == "call_function" and str(node.target).startswith("onednn.") and "prepack" not in str(node.target))


def test_pt2e_lowering_equals_torchaos_or_does_better():
    run_law("PT2E law (against torchao's x86 lowering)", float_models(max_blocks=4, kinds=PT2E_KINDS), check_pt2e, share=0.5)


def check_pt2e(model):
    inputs = model.make_inputs(BATCH, 0)
    try:
        converted = pt2e_converted(model, inputs)
    except Exception:
        return "does not export or quantize with PT2E", False
    snapshot = ModelSnapshot.of(converted)
    try:
        lowering = fqlower.lower_pt2e(converted)
    except fqlower.FqlowerError as error:
        assert error.node is not None, error
        return "fqlower raises an error naming the node", True
    assert snapshot.differences(converted) == []
    with torch.no_grad():
        expected, ours = floats(converted(*inputs)), floats(lowering.module(*inputs))
    assert len(ours) == len(expected)
    bound = 1e-4 * largest(expected) + 1e-6
    lower_with_torchao = torchao_api()[3]
    try:
        with quiet():
            theirs_module = lower_with_torchao(copy.deepcopy(converted), inputs)
            with torch.no_grad():
                theirs = floats(theirs_module(*inputs))
    except Exception:
        assert distance(ours, expected) <= bound
        return "torchao's lowering or its model fails; fqlower's computes the converted model", True
    assert int8_ops(lowering.module) >= int8_ops(theirs_module)
    if distance(ours, theirs) <= 1e-4 * largest(theirs) + 1e-6:
        extra = int8_ops(lowering.module) - int8_ops(theirs_module)
        return "equal to torchao's" + (f", {extra} more int8 ops" if extra else ""), True
    assert distance(ours, expected) <= distance(theirs, expected) + 1e-6
    return "closer to the converted model than torchao's", True
