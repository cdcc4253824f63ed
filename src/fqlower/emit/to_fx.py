"""`to_fx`: turn a program back into a runnable GraphModule, the one place with effects.

It materialises `Build` specs (quantized modules, packed weights), installs every
module and constant the graph refers to at its path, builds one `torch.fx.Graph`,
and constructs the GraphModule once (one `recompile`). Objects that came from the
input model are installed by reference and never modified: intermediate modules
on a path (`blocks` of `blocks.3.conv`) are fresh `torch.nn.Module`s, as torch's
own GraphModule constructor makes them.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.fx

from fqlower.emit.builders import BUILDERS
from fqlower.errors import EmitError
from fqlower.ir import Build, FrozenDict, ListArg, Original, Program, Ref, gc_paused
from fqlower.names import resolve

PACKED_WEIGHT_MARK = "_packed_weight"


def call_method(name: str, receiver: Any, *args: Any, **kwargs: Any) -> Any:
    """`receiver.name(*args, **kwargs)`: how specs spell a call_method node."""
    return getattr(receiver, name)(*args, **kwargs)


def materialize(program: Program, value: Any, built: dict[Build, Any] | None = None) -> Any:
    """The object a table value stands for: specs are built, anything else is itself.

    `built` remembers the modules built from references (`Cls.from_reference(...)`) in
    one emission: two equal specs give the same module, so a per-call module made
    `with_output_qparams` of another shares that module's packed weight."""
    if isinstance(value, Original):
        try:
            return program.originals[value.path]
        except KeyError:
            raise EmitError(f"spec refers to {value.path!r}, which the input model does not have") from None
    if isinstance(value, Build):
        if built is None or not value.factory.endswith(".from_reference") or not _hashable(value):
            return _build(program, value, built)
        if value not in built:
            built[value] = _build(program, value, built)
        return built[value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(materialize(program, item, built) for item in value)
    if isinstance(value, ListArg):
        return [materialize(program, item, built) for item in value.items]
    if isinstance(value, FrozenDict):
        return {key: materialize(program, item, built) for key, item in value.items()}
    return value


def _hashable(spec: Build) -> bool:
    try:
        hash(spec)
    except TypeError:
        return False
    return True


def _build(program: Program, spec: Build, built: dict[Build, Any] | None) -> Any:
    factory = resolve(spec.factory)
    args = [materialize(program, item, built) for item in spec.args]
    kwargs = {key: materialize(program, item, built) for key, item in spec.kwargs.items()}
    builder = BUILDERS.get(spec.factory)
    if builder is not None and len(args) == 3 and not kwargs:
        made = builder(*args)
        if made is not None:
            return made
    return factory(*args, **kwargs)


def _materialize_at(program: Program, path: str, value: Any, built: dict[Build, Any]) -> Any:
    try:
        return materialize(program, value, built)
    except EmitError:
        raise
    except Exception as error:
        raise EmitError(f"cannot build the object at {path!r} from {value!r}: {error}") from error


@functools.cache
def copies_keep_persistence() -> bool:
    """Whether `GraphModule(root, graph)` copies a non-persistent buffer that a get_attr
    reads as non-persistent. torch 2.14's `_copy_attr` does (torch/fx/graph_module.py:
    `persistent = field not in from_module._non_persistent_buffers_set`); 2.13's registered
    every copied tensor as a persistent buffer. torch's lowering ends with that
    constructor (`fold_weight`), so its output follows the torch it runs on."""
    root = torch.nn.Module()
    root.register_buffer("probe", torch.zeros(()), persistent=False)
    graph = torch.fx.Graph()
    graph.output(graph.get_attr("probe"))
    return "probe" in torch.fx.GraphModule(root, graph)._non_persistent_buffers_set


def _install(root: torch.nn.Module, path: str, value: Any, fresh: set[int], persistent: bool = True) -> None:
    """Put `value` at `path` under `root`, creating fresh intermediate modules.

    Never writes into a module it did not create: if a parent on the path is an
    input module, the value must already be there. A tensor that is not a Parameter
    becomes a buffer, persistent unless `persistent` is False.
    """
    *parents, field = path.split(".")
    owner: Any = root
    for depth, part in enumerate(parents):
        child = getattr(owner, part, None)
        if child is None:
            child = torch.nn.Module()
            fresh.add(id(child))
            setattr(owner, part, child)
        elif id(child) not in fresh:
            remainder = parents[depth + 1 :] + [field]
            found = _walk(child, remainder)
            if found is not value:
                raise EmitError(
                    f"cannot install {path!r}: module {'.'.join(parents[: depth + 1])!r} comes from the input "
                    "model and holds something else there"
                )
            return
        owner = child
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        owner.register_buffer(field, value, persistent=persistent)
    else:
        setattr(owner, field, value)


def _walk(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        obj = getattr(obj, part, None)
    return obj


def fx_arg(value: Any, env: dict[str, torch.fx.Node]) -> Any:
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, tuple):
        items = [fx_arg(item, env) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, ListArg):
        return [fx_arg(item, env) for item in value.items]
    if isinstance(value, FrozenDict):
        return {key: fx_arg(item, env) for key, item in value.items()}
    if isinstance(value, slice):
        return slice(fx_arg(value.start, env), fx_arg(value.stop, env), fx_arg(value.step, env))
    return value


def _save_packed_weights(module: torch.nn.Module, destination: dict, prefix: str, keep_vars: bool) -> None:
    """state_dict hook: packed weights are ScriptObjects, which state_dict skips by itself.
    They come in alphabetical order, as torch's hook (which walks `dir()`) gives them."""
    attributes = vars(module)
    for name in sorted(attributes):
        if PACKED_WEIGHT_MARK in name and isinstance(attributes[name], torch._C.ScriptObject):
            destination[prefix + name] = attributes[name]


def _load_packed_weights(
    module: torch.nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    """load_state_dict pre-hook: take this module's packed weights out of `state_dict`."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        name = key[len(prefix) :]
        if "." not in name and PACKED_WEIGHT_MARK in name and isinstance(state_dict[key], torch._C.ScriptObject):
            setattr(module, name, state_dict.pop(key))


def _nested(paths: dict[str, Any]) -> bool:
    """True when some path lies inside another (`blocks` and `blocks.3.conv`)."""
    for path in paths:
        while "." in path:
            path = path.rpartition(".")[0]
            if path in paths:
                return True
    return False


def _graph_module(program: Program, graph: torch.fx.Graph, targets: dict[str, Any], values: dict[str, Any]) -> torch.fx.GraphModule:
    """`GraphModule(root, graph)` for a root holding `values` at their paths.

    That constructor copies every target out of the root in graph order; when no
    target's path is inside another's and none starts with a GraphModule attribute,
    installing the values in graph order into a GraphModule made with an empty graph
    gives the same module without building the root first."""
    context = program.context
    # the input's non-persistent buffers stay so where torch's own constructor keeps them
    non_persistent = context.non_persistent_buffers if copies_keep_persistence() else frozenset()
    module = torch.fx.GraphModule(
        torch.nn.Module(),
        torch.fx.Graph(tracer_cls=context.tracer_cls, tracer_extras=context.tracer_extras),
        class_name=context.class_name,
    )
    fresh: set[int] = set()
    if _nested(targets) or any(hasattr(module, path.partition(".")[0]) for path in targets):
        root = torch.nn.Module()
        for path in values:  # parents before children
            _install(root, path, values[path], fresh, path not in non_persistent)
        root.training = context.training
        return torch.fx.GraphModule(root, graph, class_name=context.class_name)
    for path in targets:
        _install(module, path, values[path], fresh, path not in non_persistent)
    module.training = context.training
    module.graph = graph
    return module


def to_fx(program: Program, built: dict[Build, Any] | None = None) -> torch.fx.GraphModule:
    """The GraphModule a program describes; reads the program, builds new objects.

    `built` (see `materialize`) may hold modules already built from equal specs, by a
    validation of the same lowering (fqlower.validation): they are taken, not rebuilt."""
    with gc_paused():
        return _to_fx(program, built if built is not None else {})


def _to_fx(program: Program, built: dict[Build, Any]) -> torch.fx.GraphModule:
    graph = torch.fx.Graph(tracer_cls=program.context.tracer_cls, tracer_extras=program.context.tracer_extras)
    if program.context.codegen is not None:
        graph._codegen = program.context.codegen
    env: dict[str, torch.fx.Node] = {}
    targets: dict[str, Any] = {}
    for node in program.nodes():
        if node.op == "call_module":
            targets.setdefault(node.target, program.modules.get(node.target))
        elif node.op == "get_attr":
            targets.setdefault(node.target, program.constants.get(node.target))
        fx_node = graph.create_node(
            node.op,
            node.target,
            fx_arg(node.args, env),
            fx_arg(node.kwargs, env),
            name=node.name,
            type_expr=node.type,
        )
        if fx_node.name != node.name:
            raise EmitError(f"node {node.name!r} came out as {fx_node.name!r}: the name is not a valid FX name")
        fx_node.meta = dict(node.meta)
        env[node.name] = fx_node

    values = {path: _materialize_at(program, path, targets[path], built) for path in sorted(targets, key=lambda path: path.count("."))}
    packed = any(isinstance(value, torch._C.ScriptObject) and PACKED_WEIGHT_MARK in path for path, value in values.items())
    module = _graph_module(program, graph, targets, values)
    module.meta = dict(program.context.meta)
    if packed:
        module._register_state_dict_hook(_save_packed_weights)
        module.register_load_state_dict_pre_hook(_load_packed_weights)
    return module
