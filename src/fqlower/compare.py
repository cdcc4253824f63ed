"""Exact comparisons of models and values: the checks differential tests are built on.

- `values_equal`: bit-identical tensors (quantized ones by representation and
  quantization parameters), packed weights by their unpacked state, containers
  recursively.
- `state_dict_differences`, `module_type_differences`, `graph_differences`: lists of
  human-readable differences between two GraphModules (empty when equal).
- `ModelSnapshot`: a deep record of a model (code, module types, state_dict) to
  prove that a call did not mutate it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.errors import UnsupportedInput
from fqlower.log.fingerprint import describe, non_persistent_buffers


def values_equal(a: Any, b: Any) -> bool:
    """Bit-identical equality for tensors, packed weights and containers of them."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.is_quantized != b.is_quantized:
            return False
        if "meta" in (a.device.type, b.device.type):
            return a.device == b.device  # meta tensors have no values
        if a.is_quantized:
            return describe(a) == describe(b)
        if a.dtype.is_floating_point or a.dtype.is_complex:
            # equal_nan: a NaN produced by the same kernel on both sides is equal bits.
            # allclose alone: torch.equal has no CPU kernel for some dtypes (complex32,
            # float4_e2m1fn_x2), and where it has one, allclose with no tolerance agrees
            return bool(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
        return bool(torch.equal(a, b))
    if isinstance(a, torch._C.ScriptObject) or isinstance(b, torch._C.ScriptObject):
        if a is b:
            return True
        try:
            return type(a) is type(b) and describe(a) == describe(b)
        except UnsupportedInput:  # one of them cannot be read back: nothing to compare
            return False
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[key], b[key]) for key in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def state_dict_differences(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    differences = []
    if list(sa) != list(sb):
        differences.append(f"state_dict keys differ: only left {sorted(set(sa) - set(sb))}, only right {sorted(set(sb) - set(sa))}" if set(sa) != set(sb) else "state_dict key order differs")
    for key in sa.keys() & sb.keys():
        if not values_equal(sa[key], sb[key]):
            differences.append(f"state_dict[{key!r}] differs")
    return differences


def module_types(model: torch.nn.Module) -> dict[str, type]:
    return {path: type(module) for path, module in model.named_modules(remove_duplicate=False) if path}


def module_type_differences(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    ta, tb = module_types(a), module_types(b)
    differences = [f"module at {path!r}: {ta.get(path)} vs {tb.get(path)}" for path in sorted(ta.keys() | tb.keys()) if ta.get(path) is not tb.get(path)]
    return differences


def graph_shape(gm: torch.fx.GraphModule) -> list[tuple[Any, ...]]:
    """The graph with node names replaced by their position: equal for graphs that
    differ only in node names."""
    index = {node: position for position, node in enumerate(gm.graph.nodes)}

    def rename(value: Any) -> Any:
        return torch.fx.node.map_arg(value, lambda node: f"%{index[node]}")

    shape = []
    for node in gm.graph.nodes:
        target = node.target if node.op != "placeholder" else "placeholder"
        # repr, so that True and 1 (equal in Python) stay different
        shape.append((node.op, repr(describe(target)), repr(describe(rename(node.args))), repr(describe(rename(dict(node.kwargs))))))
    return shape


def graph_differences(a: torch.fx.GraphModule, b: torch.fx.GraphModule) -> list[str]:
    sa, sb = graph_shape(a), graph_shape(b)
    if len(sa) != len(sb):
        return [f"graphs have {len(sa)} and {len(sb)} nodes"]
    return [f"node #{i}: {x} vs {y}" for i, (x, y) in enumerate(zip(sa, sb)) if x != y]


@attrs.frozen
class ModelSnapshot:
    """Everything a caller could see change in a GraphModule."""

    code: str
    graph: tuple[Any, ...]
    types: tuple[tuple[str, type], ...]
    state: dict[str, Any] = attrs.field(eq=False)  # state_dict plus non-persistent buffers
    attributes: tuple[str, ...]
    # per module: its configuration (extra_repr) and the values of its plain attributes
    # (numbers, strings, tensors and packed weights held outside the state_dict)
    configuration: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()

    @classmethod
    def of(cls, model: torch.fx.GraphModule) -> ModelSnapshot:
        return cls(
            code=model.code,
            graph=tuple(graph_shape(model)) + tuple(node.name for node in model.graph.nodes),
            types=tuple(module_types(model).items()),
            state=copy.deepcopy({**model.state_dict(keep_vars=False), **{f"~{k}": v for k, v in non_persistent_buffers(model)}}),
            attributes=tuple(sorted(vars(model))),
            configuration=tuple(
                (path, module.extra_repr(), _plain_attributes(module)) for path, module in model.named_modules(remove_duplicate=False)
            ),
        )

    def differences(self, model: torch.fx.GraphModule) -> list[str]:
        now = ModelSnapshot.of(model)
        found = [
            f"{field} changed"
            for field in ("code", "graph", "types", "attributes", "configuration")
            if getattr(self, field) != getattr(now, field)
        ]
        if self.state.keys() != now.state.keys():
            found.append("state_dict keys changed")
        found += [f"state_dict[{key!r}] changed" for key in self.state.keys() & now.state.keys() if not values_equal(self.state[key], now.state[key])]
        return found


_PLAIN = (bool, int, float, str, torch.Tensor, torch._C.ScriptObject)


def _plain_attributes(module: torch.nn.Module) -> tuple[tuple[str, Any], ...]:
    """A module's own attributes that are values (not submodules, parameters, buffers or
    torch's bookkeeping), described so that an in-place change shows."""
    found = []
    for name, value in sorted(vars(module).items()):
        private_bookkeeping = name.startswith("_") and not isinstance(value, (torch.Tensor, torch._C.ScriptObject))
        if isinstance(value, _PLAIN) and not private_bookkeeping:  # e.g. GraphModule's _code
            try:
                found.append((name, repr(describe(value))))
            except UnsupportedInput:  # a packed weight that cannot be read back: its identity
                found.append((name, f"{type(value).__name__}@{id(value)}"))
    return tuple(found)


def lowering_differences(expected: torch.fx.GraphModule, actual: torch.fx.GraphModule, inputs: tuple[Any, ...]) -> list[str]:
    """Everything that tells two lowered models apart: graph up to node names, module
    types at each path, state_dict keys and values, outputs on `inputs` (bit-exact)."""
    found = graph_differences(expected, actual) + module_type_differences(expected, actual)
    found += state_dict_differences(expected, actual)
    with torch.no_grad():
        if not values_equal(expected(*inputs), actual(*inputs)):
            found.append("outputs differ")
    return found
