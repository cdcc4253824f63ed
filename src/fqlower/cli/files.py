"""Reading and writing the files the commands take: saved references and their
maps, change logs, lowered modules (pickled so that plain torch.load reads them)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import inspect
import pickle
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fqlower.cli.output import MAPS_KEYS, _failure, _one_line, _progress

def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise _failure(f"{what} {path}: no such file")
    if path.is_dir():
        raise _failure(f"{what} {path} is a directory, not a file")
    return path


def _read_torch(path: Path, what: str) -> Any:
    """A `torch.save`d file. Unpickling runs code from the file: load only files you trust."""
    import torch

    _existing(path, what)
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as error:
        raise _failure(f"cannot read {what} {path}: {_one_line(error)}") from None


@contextlib.contextmanager
def _writing(path: Path, what: str) -> Iterator[Path]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as error:
        raise _failure(f"cannot write {what} {path}: {error.strerror or _one_line(error)}") from None


def _read_log(path: Path) -> Any:
    from fqlower.log import ChangeLog
    from fqlower.errors import ChangeLogError

    _existing(path, "change log")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _failure(f"cannot read change log {path}: {_one_line(error)}") from None
    try:
        return ChangeLog.loads(text)
    except ChangeLogError as error:
        raise ChangeLogError(f"{path}: {error.message}") from None


def maps_path(reference: Path) -> Path:
    """Where the maps of a saved reference model live: REF.pt -> REF.maps.pt."""
    return reference.with_name(f"{reference.stem if reference.suffix else reference.name}.maps.pt")


# Two things torch.save gets wrong for lowered models, fixed while pickling (the file
# still loads with plain torch.load): quantized conv modules define __getstate__ and
# __setstate__ that skip nn.Module's own state, so torch.load cannot read them back
# (pytorch/pytorch#25137); they are pickled as "construct with these arguments, then
# set this state" instead, with torch's classes only. And GraphModules lose hooks.
def _reduce_quantized_conv(conv: Any) -> Any:
    kwargs = {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias() is not None,
        "padding_mode": conv.padding_mode,
    }
    if conv.transposed:
        kwargs["output_padding"] = conv.output_padding
    try:
        inspect.signature(type(conv)).bind(**kwargs)
    except TypeError:
        return NotImplemented
    cls: Any = type(conv)  # (mypy reads type() of an Any as not callable)
    return functools.partial(cls, **kwargs), (), conv.__getstate__()


def _reduce_graph_module(module: Any) -> Any:
    # torch rebuilds a GraphModule from its code and copies back only the attributes
    # the new one lacks, so hooks are lost: the packed-weight state_dict hooks among
    # them. They are set again as pickle state (nn.Module.__setstate__ updates __dict__).
    rebuild, args = module.__reduce__()[:2]
    hooks = {key: value for key, value in vars(module).items() if "hooks" in key and value}
    return rebuild, args, hooks or None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        import torch.fx
        from torch.ao.nn.quantized.modules.conv import _ConvNd

        if isinstance(obj, _ConvNd):
            return _reduce_quantized_conv(obj)
        if isinstance(obj, torch.fx.GraphModule) and not isinstance(obj, type):
            return _reduce_graph_module(obj)
        return NotImplemented


_PICKLE_MODULE: Any = types.ModuleType("fqlower_pickle")  # a module made here: its attributes are ours to set
_PICKLE_MODULE.Pickler = _Pickler
_PICKLE_MODULE.Unpickler = pickle.Unpickler
_PICKLE_MODULE.dump = pickle.dump
_PICKLE_MODULE.load = pickle.load


def save_module(module: Any, path: Path) -> None:
    """`torch.save` a lowered module so that `torch.load(path, weights_only=False)` reads
    it back, quantized convolutions included."""
    import torch

    with _writing(path, "module"):
        torch.save(module, path, pickle_module=_PICKLE_MODULE)


def _portable_qconfig(qconfig: Any) -> Any:
    """A qconfig that pickles. prepare_fx wraps observer constructors in local functions
    (to build observers on the module's device); this undoes that wrapping. Lowering only
    reads whether a qconfig is None; what cannot be made picklable is kept as its repr."""
    from torch.ao.quantization.observer import _PartialWrapper

    def pickles(value: Any) -> bool:
        try:
            pickle.dumps(value)
        except Exception:
            return False
        return True

    if pickles(qconfig):
        return qconfig
    if isinstance(qconfig, tuple) and hasattr(qconfig, "_fields"):
        fields = []
        for field in qconfig:
            if isinstance(field, _PartialWrapper):
                unwrapped = _PartialWrapper(field.p)
                unwrapped.callable_args = {k: v for k, v in field.callable_args.items() if k != "factory_kwargs"}
                field = unwrapped
            fields.append(field)
        rebuilt = type(qconfig)(*fields)
        if pickles(rebuilt):
            return rebuilt
    return re.sub(r" at 0x[0-9a-f]+", "", repr(qconfig))


def save_reference(reference: Any, path: Path) -> Path:
    """Write a `fqlower.reference.ReferenceModel` as REF.pt plus REF.maps.pt; returns the maps
    path. A PT2E model (which does not pickle) is saved with torch.export.save, re-exported
    on its example inputs: name the file REF.pt2."""
    import torch

    from fqlower.pt2e import is_pt2e

    if is_pt2e(reference.module):
        if path.suffix != ".pt2":
            raise _failure(f"a PT2E model is saved with torch.export.save: name the file {path.with_suffix('.pt2')}")
        with _writing(path, "reference model"):
            torch.export.save(torch.export.export(reference.module, tuple(reference.example_inputs)), str(path))
        target = maps_path(path)
        with _writing(target, "maps file"):
            torch.save({"qconfig_map": None, "node_name_to_scope": None, "example_inputs": tuple(reference.example_inputs)}, target)
        return target

    module = copy.deepcopy(reference.module)
    for submodule in module.modules():
        if "qconfig" in vars(submodule):
            submodule.qconfig = _portable_qconfig(submodule.qconfig)
    maps = {
        "qconfig_map": {name: _portable_qconfig(qconfig) for name, qconfig in reference.qconfig_map.items()},
        "node_name_to_scope": dict(reference.node_name_to_scope),
        "example_inputs": tuple(reference.example_inputs),
    }
    target = maps_path(path)
    with _writing(path, "reference model"):
        torch.save(module, path)
    with _writing(target, "maps file"):
        torch.save(maps, target)
    return target


def _read_exported(path: Path) -> Any:
    """The module of an ExportedProgram saved with torch.export.save (a PT2E model)."""
    import torch

    try:
        return torch.export.load(str(path)).module()
    except Exception as error:
        raise _failure(f"cannot read exported program {path}: {type(error).__name__}: {error}") from None


class _Reference:
    """A reference model loaded from files: module, maps and example inputs (if saved)."""

    def __init__(self, module: Any, qconfig_map: Any, node_name_to_scope: Any, example_inputs: Any) -> None:
        self.module = module
        self.qconfig_map = qconfig_map
        self.node_name_to_scope = node_name_to_scope
        self.example_inputs = example_inputs


def _load_reference(args: argparse.Namespace) -> _Reference:
    import torch.fx

    path = Path(args.reference)
    module = _read_exported(path) if path.suffix == ".pt2" else _read_torch(path, "reference model")
    if not isinstance(module, torch.fx.GraphModule):
        raise _failure(f"{path} holds a {type(module).__name__}, not a torch.fx.GraphModule (a quantized reference model)")
    given = getattr(args, "maps", None)
    found = Path(given) if given else maps_path(path)
    if not given and not found.exists():
        _progress(args, f"note: no maps file {found}; lowering without qconfig and scope maps (pass --maps)")
        return _Reference(module, None, None, None)
    maps = _read_torch(found, "maps file")
    if not isinstance(maps, Mapping) or set(maps) - set(MAPS_KEYS):
        keys = sorted(map(str, maps)) if isinstance(maps, Mapping) else type(maps).__name__
        raise _failure(f"maps file {found} must hold a dict with keys {', '.join(MAPS_KEYS)}; it holds {keys}")
    for key in ("qconfig_map", "node_name_to_scope"):
        if maps.get(key) is not None and not isinstance(maps[key], Mapping):
            raise _failure(f"maps file {found}: {key} must be a dict of node names, not {type(maps[key]).__name__}")
    return _Reference(module, maps.get("qconfig_map"), maps.get("node_name_to_scope"), maps.get("example_inputs"))
