"""Content hashes of programs: structure, targets, module types and values.

`fingerprint(program)` is equal for a deep copy of the same model and differs when
any node, edge, target, weight, scale or module configuration differs. Node meta
(stack traces, tracer values) is not part of it, and neither are the qconfig
objects themselves: only whether each node has one.

Inside `digest_cache()` (which pipeline runs and replays use) tensor digests are
remembered per tensor object, version counter and data pointer, so fingerprinting
after every pass does not hash the weights again. Outside it nothing is remembered:
a write through `.data` bumps no version counter, so a cache kept between calls
could miss it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from fqlower.errors import ChangeLogError, UnsupportedInput
from fqlower.ir import Build, FrozenDict, ListArg, Node, Original, Program, ProgramView, Ref
from fqlower.names import qualified_name

# id(tensor) -> (weak reference, version, data pointer, digest). Keyed by id because a
# WeakKeyDictionary compares tensors with ==, which is elementwise.
# (and ("kind", id(obj)) -> (weak reference, value) for `_memo`)
_DigestCache = dict[Any, tuple[Any, ...]]
_active_cache: contextvars.ContextVar[_DigestCache | None] = contextvars.ContextVar("fqlower_digests", default=None)


@contextlib.contextmanager
def digest_cache() -> Iterator[None]:
    """Remember tensor digests for the duration of the block (no tensor may change inside)."""
    if _active_cache.get() is not None:
        yield
        return
    token = _active_cache.set({})
    try:
        yield
    finally:
        _active_cache.reset(token)


def _memo(kind: str, obj: Any, compute: Any) -> Any:
    """compute(), remembered per object identity inside `digest_cache()` (objects of a
    program are immutable for the duration of a run)."""
    cache = _active_cache.get()
    if cache is None:
        return compute()
    key = (kind, id(obj))
    hit = cache.get(key)
    if hit is not None and hit[0]() is obj:
        return hit[-1]
    value = compute()
    try:
        reference = weakref.ref(obj, lambda _: cache.pop(key, None))
    except TypeError:
        return value
    cache[key] = (reference, value)
    return value


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of dtype, shape, quantization parameters and raw values."""
    cache = _active_cache.get()
    key = (tensor._version, tensor.data_ptr() if tensor.device.type != "meta" else 0)
    cached = cache.get(id(tensor)) if cache is not None else None
    if cached is not None and cached[0]() is tensor and cached[1:3] == key:
        known: str = cached[3]
        return known
    digest = hashlib.sha256()
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|{tensor.device.type}|".encode())
    data = tensor.detach()
    if data.is_quantized:
        digest.update(str(data.qscheme()).encode())
        if data.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            digest.update(f"{data.q_scale().hex()}|{data.q_zero_point()}".encode())
        else:
            digest.update(tensor_digest(data.q_per_channel_scales()).encode())
            digest.update(tensor_digest(data.q_per_channel_zero_points()).encode())
            digest.update(str(data.q_per_channel_axis()).encode())
        data = data.int_repr()
    if data.device.type != "meta" and data.layout == torch.strided:
        flat = data.cpu().contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())  # type: ignore[arg-type]  # an ndarray is a buffer; numpy's stubs here do not say so
    elif data.layout != torch.strided:
        digest.update(repr(data).encode())
    result = digest.hexdigest()
    if cache is not None:
        identity = id(tensor)
        cache[identity] = (weakref.ref(tensor, lambda _: cache.pop(identity, None)), *key, result)
    return result


def _name(obj: Any) -> str:
    try:
        return qualified_name(obj)
    except ChangeLogError:
        return f"{type(obj).__module__}.{type(obj).__qualname__}:{getattr(obj, '__name__', '?')}"


def describe(value: Any, program: ProgramView | None = None) -> Any:
    """A canonical, hashable-by-repr description of a value, for hashing."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ("float", value.hex() if math.isfinite(value) else repr(value))
    if isinstance(value, Ref):
        return ("ref", value.name)
    if isinstance(value, tuple):
        kind = "tuple" if not hasattr(value, "_fields") else _name(type(value))
        return (kind, tuple(describe(item, program) for item in value))
    if isinstance(value, (list, ListArg)):
        items = value.items if isinstance(value, ListArg) else value
        return ("list", tuple(describe(item, program) for item in items))
    if isinstance(value, (FrozenDict, Mapping)):
        return ("dict", tuple((describe(k, program), describe(v, program)) for k, v in value.items()))
    if isinstance(value, slice):
        return ("slice", describe((value.start, value.stop, value.step), program))
    if isinstance(value, torch.Tensor):
        return ("tensor", tensor_digest(value))
    if isinstance(value, torch.nn.Module):
        return ("module", _memo("module", value, lambda: module_digest(value)))
    if isinstance(value, torch._C.ScriptObject):
        return ("script", str(value._type()), describe(_script_state(value), program))
    if isinstance(value, Build):
        return _memo("build", value, lambda: ("build", value.factory, describe(value.args, program), describe(value.kwargs, program)))
    if isinstance(value, Original):
        found = program.originals.get(value.path) if program is not None else None
        return ("original", value.path, describe(found, program))
    if isinstance(value, (torch.dtype, torch.device, torch.memory_format, torch.layout, torch.Size)):
        return (type(value).__name__, str(value))
    if isinstance(value, type) or callable(value):
        return ("callable", _name(value))
    return ("object", _name(type(value)), repr(value))


def _script_state(value: torch._C.ScriptObject) -> Any:
    try:
        return value.__getstate__()
    except RuntimeError as error:  # e.g. per-channel weights packed with float zero points
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnsupportedInput(
            f"a {value._type()} cannot be read back by torch ({first_line}); fqlower fingerprints "
            "every value a model holds, so it cannot take this one (were its weights quantized "
            "with non-integer zero points?)"
        ) from None


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's types, configuration (repr) and state."""
    digest = hashlib.sha256()
    for path, submodule in module.named_modules(remove_duplicate=False):
        digest.update(f"{path}|{_name(type(submodule))}|{submodule.extra_repr()}\n".encode())
    for key, value in module.state_dict(keep_vars=True).items():
        digest.update(f"{key}={describe(value)!r}\n".encode())
    for key, value in non_persistent_buffers(module):
        digest.update(f"~{key}={describe(value)!r}\n".encode())
    return digest.hexdigest()


def non_persistent_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Buffers that state_dict leaves out but forward still reads."""
    found = []
    for path, submodule in module.named_modules(remove_duplicate=False):
        for name in sorted(submodule._non_persistent_buffers_set):
            value = submodule._buffers.get(name)
            if value is not None:
                found.append((f"{path}.{name}" if path else name, value))
    return found


def node_description(node: Node, program: ProgramView | None = None) -> Any:
    target = node.target if isinstance(node.target, str) else _name(node.target)
    return (node.name, node.op, target, describe(node.args, program), describe(node.kwargs, program), describe(node.type))


def node_line(node: Node, program: ProgramView | None = None) -> bytes:
    """The node's description as bytes, remembered per node object during a run."""
    line: bytes = _memo("node", node, lambda: repr(node_description(node, program)).encode() + b"\n")
    return line


def _maps_lines(program: Program) -> bytes:
    lines = [f"q:{name}:{program.qconfig[name] is None}\n" for name in sorted(program.qconfig)]
    for name in sorted(program.scope):
        path, module_type = program.scope[name]
        lines.append(f"s:{name}:{path}:{_name(module_type)}\n")
    return "".join(lines).encode()


def fingerprint(program: Program) -> str:
    """sha256 over the program in order and every module and constant it refers to
    (remembered per program inside `digest_cache()`: a pass that changes nothing
    returns the program it was given, whose fingerprint is known)."""
    digest: str = _memo("program", program, lambda: _fingerprint(program))
    return digest


def _fingerprint(program: Program) -> str:
    digest = hashlib.sha256()
    referenced: dict[str, Any] = {}
    for node in program.nodes():
        digest.update(node_line(node, program))
        if node.op == "call_module":
            referenced.setdefault(node.target, program.modules.get(node.target))
        elif node.op == "get_attr":
            referenced.setdefault(node.target, program.constants.get(node.target))
    for path in sorted(referenced):
        try:
            digest.update(f"@{path}={describe(referenced[path], program)!r}\n".encode())
        except UnsupportedInput as error:
            raise UnsupportedInput(f"{path!r}: {error.message}") from None
    digest.update(_memo("maps", program.qconfig, lambda: _maps_lines(program)))
    return digest.hexdigest()
