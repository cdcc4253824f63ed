"""Fingerprints: equal for copies, different for any change that matters."""

from __future__ import annotations

import copy
import operator

import torch
from helpers import tiny_gm

import fqlower
from fqlower import Ref, SetArgs, SetTarget, apply


def fp(gm, *maps):
    return fqlower.fingerprint(fqlower.from_fx(gm, *maps))


def test_equal_for_a_deep_copy_and_after_a_round_trip():
    gm = tiny_gm()
    assert fp(gm) == fp(copy.deepcopy(gm))
    assert fp(gm) == fqlower.fingerprint(fqlower.from_fx(fqlower.to_fx(fqlower.from_fx(gm))))


def test_differs_when_a_weight_changes():
    gm, other = tiny_gm(), tiny_gm()
    with torch.no_grad():
        other.fc.weight[0, 0] += 1e-6
    assert fp(gm) != fp(other)


def test_differs_when_a_constant_changes():
    gm, other = tiny_gm(), tiny_gm()
    with torch.no_grad():
        other.offset[1] = 0.5
    assert fp(gm) != fp(other)


def test_differs_when_a_module_configuration_changes():
    gm, other = tiny_gm(), tiny_gm()
    other.fc.in_features = 5  # shows in extra_repr, not in weights
    assert fp(gm) != fp(other)


def test_differs_when_an_edge_or_target_changes():
    program = fqlower.from_fx(tiny_gm())
    rewired = apply(program, [SetArgs("add", (Ref("fc"), Ref("x")))])
    retargeted = apply(program, [SetTarget("add", "call_function", operator.sub)])
    digests = {fqlower.fingerprint(p) for p in (program, rewired, retargeted)}
    assert len(digests) == 3


def test_differs_when_a_quantization_scale_changes():
    def quantized(scale):
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        q = graph.call_function(torch.quantize_per_tensor, (x, scale, 0, torch.quint8))
        graph.output(graph.call_method("dequantize", (q,)))
        return torch.fx.GraphModule(torch.nn.Module(), graph)

    assert fp(quantized(0.1)) == fp(quantized(0.1))
    assert fp(quantized(0.1)) != fp(quantized(0.1000001))


def test_differs_when_a_node_loses_its_qconfig():
    gm = tiny_gm()
    from torch.ao.quantization import default_qconfig

    assert fp(gm, {"fc": default_qconfig}) != fp(gm, {"fc": None})


def test_quantized_tensors_and_packed_weights_are_hashed_by_value():
    from fqlower.log.fingerprint import describe

    weight = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, None)
    same = torch.ops.quantized.linear_prepack(weight.clone(), None)
    other = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8), None)
    assert describe(packed) == describe(same)
    assert describe(packed) != describe(other)
    assert describe(weight) != describe(torch.quantize_per_tensor(weight.dequantize(), 0.2, 0, torch.qint8))


def test_regression_writes_through_data_are_seen():
    # .data writes bump no version counter: a digest cache kept between calls missed them.
    gm = tiny_gm()
    before = fp(gm)
    gm.offset.data[0] += 1.0
    assert fp(gm) != before


def test_regression_non_persistent_buffers_count():
    # state_dict() leaves non-persistent buffers out, but forward reads them.
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("gain", torch.ones(4), persistent=False)

        def forward(self, x):
            return x * self.gain

    gm = torch.fx.symbolic_trace(torch.nn.Sequential(Scale()))
    other = copy.deepcopy(gm)
    other.get_submodule("0").gain.fill_(2.0)
    assert fp(gm) != fp(other)


def test_digest_cache_is_scoped_to_a_run():
    from fqlower.log.fingerprint import digest_cache

    gm = tiny_gm()
    with digest_cache():
        inside = fp(gm), fp(gm)
    gm.offset.data[1] = 9.0
    assert inside[0] == inside[1] != fp(gm)
