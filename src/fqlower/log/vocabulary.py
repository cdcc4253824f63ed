"""What a change log may name: the callables fqlower's passes put into a program.

A change log names callables (node targets, the factories of module and packed-weight
specs) by qualified name, and replaying it calls them: when the lowered model is
built and when it runs. A log from elsewhere is therefore code. Replay accepts a name
only when a lowering pass could have written it:

- a native op, quantized class or prepack op from fqlower's tables (`fqlower.patterns`
  and torch's float-to-quantized operator map), or `<quantized class>.from_reference`;
- `fqlower.emit.call_method`, the factory folded weights use for method calls, and
  `fqlower.emit.builders.with_output_qparams`, that of a per-call module sharing a
  packed weight;
- a callable the input model itself calls (a weight is folded by calling the very
  functions that compute it in the model).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import attrs
from torch.ao.quantization.quantization_mappings import DEFAULT_FLOAT_TO_QUANTIZED_OPERATOR_MAPPINGS

from fqlower import patterns
from fqlower.errors import ChangeLogError
from fqlower.ir import Build, FrozenDict, ListArg, Program
from fqlower.names import qualified_name

CALL_METHOD_FACTORY = "fqlower.emit.call_method"
# the factory of a per-call module that shares its packed weight (fqlower.passes.module_calls)
SHARED_WEIGHT_FACTORY = "fqlower.emit.builders.with_output_qparams"


def _callables_in(value: Any, seen: set[int]) -> Iterator[Any]:
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            yield from _callables_in(item, seen)
    elif isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            yield from _callables_in(item, seen)
    elif isinstance(value, patterns.NodeFamily):
        yield from _callables_in((value.functions, value.module_types), seen)
    elif callable(value):
        yield value


def _names_of(values: Iterator[Any]) -> Iterator[str]:
    for value in values:
        try:
            name = qualified_name(value)
        except ChangeLogError:  # not importable by name: a log could not name it either
            continue
        yield name
        if isinstance(value, type) and hasattr(value, "from_reference"):
            yield f"{name}.from_reference"


@functools.cache
def pass_vocabulary() -> frozenset[str]:
    """Qualified names of everything a lowering pass may write into a program."""
    tables = [value for name, value in vars(patterns).items() if name.isupper()]
    tables.append(DEFAULT_FLOAT_TO_QUANTIZED_OPERATOR_MAPPINGS)
    return frozenset(_names_of(_callables_in(tables, set()))) | {CALL_METHOD_FACTORY, SHARED_WEIGHT_FACTORY}


def model_vocabulary(program: Program) -> frozenset[str]:
    """Qualified names of the callables a program's call_function nodes call."""
    return frozenset(_names_of(iter({id(n.target): n.target for n in program.nodes() if n.op == "call_function"}.values())))


def names_in(value: Any) -> Iterator[str]:
    """The qualified names that a value from a change log (an edit, a node, a spec)
    makes fqlower or the lowered model call."""
    if isinstance(value, Build):
        yield value.factory
    elif getattr(value, "op", None) == "call_function" and hasattr(value, "target"):  # a Node, a SetTarget
        yield _name_or_repr(value.target)
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            yield from names_in(getattr(value, field.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from names_in(item)
    elif isinstance(value, ListArg):
        yield from names_in(value.items)
    elif isinstance(value, FrozenDict):
        yield from names_in(tuple(value.values()))


def _name_or_repr(target: Any) -> str:
    try:
        return qualified_name(target)
    except ChangeLogError:
        return repr(target)
