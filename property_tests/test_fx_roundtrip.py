"""Laws of the FX boundary, on random runnable GraphModules (see strategies.py).

- `to_fx(from_fx(gm))` is gm again: same graph, names, code, state, module types,
  and bit-identical outputs.
- Importing, emitting and fingerprinting never change the input model.
- `fingerprint` is equal for equal models (deep copy, round trip) and differs when
  one weight or one edge differs.

Example counts come from the hypothesis profiles in conftest.py.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import Example, fx_graph_modules, run

from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    module_type_differences,
    state_dict_differences,
    values_equal,
)
from fqlower.engine.draft import apply
from fqlower.engine.edits import SetArgs
from fqlower.emit import to_fx
from fqlower.log.fingerprint import fingerprint
from fqlower.ir import Ref, from_fx, map_arg, refs_in


def node_names(gm: torch.fx.GraphModule) -> list[str]:
    return [node.name for node in gm.graph.nodes]


@given(fx_graph_modules())
def test_roundtrip_preserves_graph_state_and_outputs(example: Example) -> None:
    gm = example.module
    rebuilt = to_fx(from_fx(gm))

    assert graph_differences(gm, rebuilt) == []
    assert node_names(rebuilt) == node_names(gm)
    assert rebuilt.code == gm.code
    assert state_dict_differences(gm, rebuilt) == []
    assert module_type_differences(gm, rebuilt) == []
    assert (type(rebuilt).__name__, rebuilt.training) == (type(gm).__name__, gm.training)

    expected = run(example)
    actual = rebuilt(*example.inputs)
    assert values_equal(actual, expected), f"outputs differ:\n{actual}\nvs\n{expected}"


@given(fx_graph_modules())
def test_roundtrip_never_mutates_input(example: Example) -> None:
    gm = example.module
    snapshot = ModelSnapshot.of(gm)

    program = from_fx(gm)
    to_fx(program)
    fingerprint(program)

    assert snapshot.differences(gm) == []


@given(fx_graph_modules())
def test_fingerprint_is_stable(example: Example) -> None:
    gm = example.module
    expected = fingerprint(from_fx(gm))

    assert fingerprint(from_fx(gm)) == expected  # again: cached tensor digests agree
    assert fingerprint(from_fx(copy.deepcopy(gm))) == expected
    assert fingerprint(from_fx(to_fx(from_fx(gm)))) == expected


@given(fx_graph_modules(), st.data())
def test_fingerprint_changes_when_one_weight_changes(example: Example, data: st.DataObject) -> None:
    gm = example.module
    expected = fingerprint(from_fx(gm))
    changed = copy.deepcopy(gm)
    weights = dict(changed.named_parameters()) | dict(changed.named_buffers())
    assume(weights)
    name = data.draw(st.sampled_from(sorted(weights)), label="weight")
    index = data.draw(st.integers(0, weights[name].numel() - 1), label="index")
    how = data.draw(st.sampled_from(["in place", "through .data"]), label="how")

    # Hash the copy first, so the change must also invalidate cached digests.
    assert fingerprint(from_fx(changed)) == expected
    target = weights[name] if how == "in place" else weights[name].data
    with torch.no_grad():
        target.view(-1)[index] += 1.0

    after = fingerprint(from_fx(changed))
    assert after != expected, f"changing {name}[{index}] {how} left the fingerprint at {expected}"
    assert fingerprint(from_fx(gm)) == expected


def _rewire_options(example: Example) -> list[tuple[str, str, str]]:
    """(node, input it reads, another earlier tensor of the same shape and dtype)."""
    gm = example.module
    order = node_names(gm)
    options = []
    for position, node in enumerate(gm.graph.nodes):
        if node.op in ("placeholder", "get_attr"):
            continue
        for used in dict.fromkeys(arg.name for arg in node.all_input_nodes):
            if used not in example.tensors:
                continue
            options += [
                (node.name, used, other)
                for other in order[:position]
                if other != used and example.tensors.get(other) == example.tensors[used]
            ]
    return options


def _replace_first(value: Any, old: str, new: str) -> Any:
    """`value` with its first reference to `old` made a reference to `new`."""
    done = False

    def swap(ref: Ref) -> Ref:
        nonlocal done
        if ref.name == old and not done:
            done = True
            return Ref(new)
        return ref

    return map_arg(value, swap)


@given(fx_graph_modules(), st.data())
def test_fingerprint_changes_when_an_edge_is_rewired(example: Example, data: st.DataObject) -> None:
    options = _rewire_options(example)
    assume(options)
    name, old, new = data.draw(st.sampled_from(options), label="rewire (node, old input, new input)")
    program = from_fx(example.module)
    expected = fingerprint(program)
    node = program.node(name)
    args, kwargs = _replace_first((node.args, node.kwargs), old, new)
    assert [ref.name for ref in refs_in((args, kwargs))] != [ref.name for ref in refs_in((node.args, node.kwargs))]

    rewired = apply(program, [SetArgs(name, args, kwargs)])

    after = fingerprint(rewired)
    assert after != expected, f"rewiring {name} from {old} to {new} left the fingerprint at {expected}"
    assert fingerprint(program) == expected
    assert graph_differences(example.module, to_fx(rewired)) != []
