"""The `fqlower` command.

    fqlower demo
    fqlower lower --model net.py:Net --qconfig fbgemm --input-shape 1,3,32,32 \\
                  --save-reference ref.pt -o lowered.pt --log changes.jsonl
    fqlower lower ref.pt -o lowered.pt --log changes.jsonl
    fqlower replay ref.pt changes.jsonl -o lowered.pt
    fqlower explain ref.pt [--log changes.jsonl]
    fqlower bisect ref.pt changes.jsonl --tolerance 0.05
    fqlower diff ref.pt [--pass lower-binary-ops] [--dot diff.dot] [--svg diff.svg]

A saved reference is two files: REF.pt (the reference GraphModule, `torch.save`d) and
REF.maps.pt (a `torch.save`d dict with "qconfig_map", "node_name_to_scope" and,
optionally, "example_inputs"); commands look for the maps beside the model unless
--maps names them. Exit codes: 0 ok, 1 error or failed check, 2 usage. Errors print
`fqlower: error: ...` (with --debug, the traceback); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import inspect
import pickle
import re
import sys
import time
import types
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130

QCONFIGS = ("fbgemm", "x86", "qnnpack", "onednn", "dynamic", "fp16")
MAPS_KEYS = ("qconfig_map", "node_name_to_scope", "example_inputs")
LARGE_MODEL_NODES = 2000
"""Lowering a model with at least this many nodes reports each pass on stderr."""


# --- output ----------------------------------------------------------------------------------


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    first, *rest = message.splitlines() or [""]
    print(f"fqlower: error: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}" if line else "", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _failure(message: str) -> Exception:
    from fqlower.errors import FqlowerError

    return FqlowerError(message)


# --- files -----------------------------------------------------------------------------------


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
    from fqlower.changelog import ChangeLog
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
    """Write a `fqlower.reference.ReferenceModel` as REF.pt plus REF.maps.pt; returns the maps path."""
    import torch

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
    module = _read_torch(path, "reference model")
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


# --- inputs and float models -----------------------------------------------------------------


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (write it as 1,3,32,32)") from None
    if not shape or any(size < 0 for size in shape):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (write it as 1,3,32,32)")
    return shape


def _inputs(args: argparse.Namespace, saved: Any = None) -> tuple[Any, ...] | None:
    """Inputs from --inputs FILE, else random ones of each --input-shape, else `saved`."""
    import torch

    if getattr(args, "inputs", None):
        path = Path(args.inputs)
        value = _read_torch(path, "inputs file")
        if isinstance(value, torch.Tensor):
            return (value,)
        if isinstance(value, (tuple, list)):
            return tuple(value)
        raise _failure(f"inputs file {path} must hold a tensor or a tuple of inputs, not {type(value).__name__}")
    if getattr(args, "input_shape", None):
        generator = torch.Generator().manual_seed(args.seed)
        return tuple(torch.randn(shape, generator=generator) for shape in args.input_shape)
    return tuple(saved) if saved is not None else None


def _load_float_model(spec: str) -> Any:
    """The model a `path.py[:Name]` spec names: a module class (constructed without
    arguments) or a factory function; without Name, `model()` or the file's only module class."""
    from torch import nn

    path_text, name = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier():
        path_text, name = head, tail
    path = _existing(Path(path_text), "model file")
    module_name = "_fqlower_model_" + re.sub(r"\W", "_", path.stem)
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise _failure(f"model file {path} is not a Python file")
    namespace = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = namespace
    sys.path.insert(0, str(path.resolve().parent))
    try:
        loader_spec.loader.exec_module(namespace)
    except Exception as error:
        raise _failure(f"running model file {path} failed: {_one_line(error)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    if name is None:
        classes = [
            value.__name__
            for value in vars(namespace).values()
            if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module_name
        ]
        if callable(getattr(namespace, "model", None)):
            name = "model"
        elif len(classes) == 1:
            name = classes[0]
        else:
            found = f" (it defines {', '.join(classes)})" if classes else ""
            raise _failure(f"model file {path} has no model() factory; name the model: --model {path}:Name{found}")
    if not hasattr(namespace, name):
        raise _failure(f"model file {path} defines no {name!r}")
    factory = getattr(namespace, name)
    if not callable(factory):
        raise _failure(f"{path}:{name} is a {type(factory).__name__}, not a module class or a factory")
    try:
        model = factory()
    except Exception as error:
        raise _failure(f"building the model {path}:{name}() failed: {_one_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise _failure(f"{path}:{name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _qconfig_recipe(name: str) -> tuple[Any, Any]:
    """(QConfigMapping, BackendConfig or None) of a --qconfig choice."""
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        float16_dynamic_qconfig,
        get_default_qconfig_mapping,
    )

    if name == "dynamic":
        return QConfigMapping().set_global(default_dynamic_qconfig), None
    if name == "fp16":
        return QConfigMapping().set_global(float16_dynamic_qconfig), None
    if name == "onednn":
        from torch.ao.quantization.backend_config import get_onednn_backend_config

        return get_default_qconfig_mapping(name), get_onednn_backend_config()
    return get_default_qconfig_mapping(name), None


def _reference_from_float(args: argparse.Namespace) -> Any:
    from fqlower.reference import reference_model

    model = _load_float_model(args.model)
    inputs = cast(tuple[Any, ...], _inputs(args))  # main() refuses --model without inputs
    recipe = args.qconfig or "fbgemm"
    mapping, backend_config = _qconfig_recipe(recipe)
    _progress(args, f"quantizing {args.model} ({recipe}): prepare, calibrate on {_describe_inputs(inputs)}, convert to reference")
    started = time.perf_counter()
    try:
        reference = reference_model(model, inputs, mapping, backend_config=backend_config)
    except Exception as error:
        raise _failure(f"quantizing {args.model} with {recipe} failed: {_one_line(error)}") from None
    _progress(args, f"  reference model: {len(reference.module.graph.nodes)} nodes ({time.perf_counter() - started:.2f} s)")
    return reference


def _describe_inputs(inputs: Sequence[Any]) -> str:
    shapes = [f"{'x'.join(map(str, item.shape))}" if hasattr(item, "shape") else type(item).__name__ for item in inputs]
    return "random inputs " + ", ".join(shapes)


# --- lowering --------------------------------------------------------------------------------


class _Announced:
    """A pass that reports itself on stderr before it runs (for big models)."""

    def __init__(self, inner: Any, step: int, total: int, args: argparse.Namespace) -> None:
        self.inner, self.step, self.total, self.args = inner, step, total, args
        self.name = inner.name

    def run(self, program: Any) -> Any:
        _progress(self.args, f"  [{self.step}/{self.total}] {self.name}")
        return self.inner.run(program)


def _lower(args: argparse.Namespace, reference: Any) -> Any:
    import fqlower
    from fqlower.pipeline import Pipeline

    pipeline = fqlower.default_pipeline()
    nodes = len(reference.module.graph.nodes)
    _progress(args, f"lowering {nodes} nodes through {len(pipeline.names)} passes")
    if nodes >= LARGE_MODEL_NODES:
        passes = pipeline.leaves()
        pipeline = Pipeline(pipeline.name, tuple(_Announced(p, i, len(passes), args) for i, p in enumerate(passes, 1)))
    started = time.perf_counter()
    lowering = fqlower.lower(
        reference.module,
        reference.qconfig_map,
        reference.node_name_to_scope,
        keep_original_weights=getattr(args, "keep_original_weights", False),
        pipeline=pipeline,
    )
    _progress(args, f"  done in {time.perf_counter() - started:.2f} s")
    return lowering


def _lowering_from(args: argparse.Namespace, reference: Any, log_path: str | None) -> Any:
    """Replay `log_path` if given, else lower."""
    import fqlower

    if not log_path:
        return _lower(args, reference)
    log = _read_log(Path(log_path))
    _progress(args, f"replaying {len(log.changes)} changes from {log_path}")
    return fqlower.replay(
        reference.module,
        log,
        reference.qconfig_map,
        reference.node_name_to_scope,
        keep_original_weights=getattr(args, "keep_original_weights", False),
        trusted=getattr(args, "trusted", False),
    )


def _print_summary(lowering: Any, reference_nodes: int) -> None:
    changes = Counter(change.step for change in lowering.log.changes)
    skips = Counter(skip.step for skip in lowering.log.skips)
    timings = list(lowering.timings)
    print(f"{'step':>4}  {'pass':<28} {'rewrites':>8} {'skips':>6} {'ms':>8}")
    for step, record in enumerate(lowering.log.header.passes):
        ms = f"{1e3 * timings[step][1]:.2f}" if step < len(timings) and timings[step][0] == record.name else "-"
        print(f"{step:>4}  {record.name:<28} {changes[step]:>8} {skips[step]:>6} {ms:>8}")
    print(f"reference: {reference_nodes} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")


def _write_outputs(lowering: Any, output: str | None, log: str | None = None) -> None:
    if output:
        save_module(lowering.module, Path(output))
        print(f"wrote {output} (lowered module)")
    if log:
        with _writing(Path(log), "change log") as path:
            path.write_text(lowering.log.dumps(), encoding="utf-8")
        print(f"wrote {log} ({len(lowering.log.changes)} changes, {len(lowering.log.skips)} skips)")


# --- commands --------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    import fqlower
    from fqlower.compare import ModelSnapshot, lowering_differences
    from fqlower.examples import demo_inputs, demo_reference_model
    from fqlower.reference import torch_lowering

    print(f"Quantizing the built-in DemoNet with FX (static int8, {args.backend}): prepare, calibrate on generated data, convert to reference")
    reference = demo_reference_model(args.backend)
    model = reference.module
    snapshot = ModelSnapshot.of(model)

    started = time.perf_counter()
    lowering = fqlower.lower(model, reference.qconfig_map, reference.node_name_to_scope)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    expected = torch_lowering(reference)
    torch_seconds = time.perf_counter() - started

    changes = Counter(change.pass_name for change in lowering.log.changes)
    skips = Counter(skip.pass_name for skip in lowering.log.skips)
    print(f"\n{'pass':<28} {'rewrites':>8} {'skips':>6} {'ms':>8}")
    for name, seconds in lowering.timings:
        print(f"{name:<28} {changes[name]:>8} {skips[name]:>6} {1e3 * seconds:>8.2f}")
    reasons = Counter(skip.reason for skip in lowering.log.skips)
    if reasons:
        print("\nleft alone, and why:")
        for reason, count in reasons.most_common():
            print(f"  {count} x {reason}")

    differences = []
    for seed in (1, 2):
        differences += lowering_differences(expected, lowering.module, demo_inputs(seed))
    mutated = snapshot.differences(model)
    print(f"\nreference model: {len(model.graph.nodes)} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")
    print(f"fqlower {1e3 * ours_seconds:.1f} ms (incl. change log and fingerprints), torch {1e3 * torch_seconds:.1f} ms")
    print(f"equal to torch's lowering (graph, module types, state_dict, outputs): {not differences}")
    for difference in differences:
        print(f"  {difference}")
    print(f"caller's model unchanged: {not mutated}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_module(lowering.module, out / "lowered.pt")  # torch.save, readable by torch.load
    (out / "changes.jsonl").write_text(lowering.log.dumps())
    (out / "program.txt").write_text(fqlower.format_program(lowering.program) + "\n")
    print(f"\nsaved to {out.resolve()}/: lowered.pt, changes.jsonl ({len(lowering.log.entries)} entries), program.txt")
    ok = not differences and not mutated
    print("OK" if ok else "MISMATCH")
    return EXIT_OK if ok else EXIT_FAILED


def _lower_command(args: argparse.Namespace) -> int:
    parser = args.command_parser
    if bool(args.reference) == bool(args.model):
        parser.error("give either REFERENCE (a saved reference model) or --model PATH.py[:NAME]")
    if args.model:
        if not (args.input_shape or args.inputs):
            parser.error("--model needs example inputs: --input-shape 1,3,32,32 (repeat for more inputs) or --inputs FILE")
        reference = _reference_from_float(args)
        if args.save_reference:
            maps = save_reference(reference, Path(args.save_reference))
            print(f"wrote {args.save_reference} (reference model) and {maps} (its maps and example inputs)")
    else:
        for flag, value in (("--qconfig", args.qconfig), ("--input-shape", args.input_shape), ("--inputs", args.inputs), ("--save-reference", args.save_reference)):
            if value:
                parser.error(f"{flag} goes with --model, not with a saved REFERENCE")
        reference = _load_reference(args)
    lowering = _lower(args, reference)
    _print_summary(lowering, len(reference.module.graph.nodes))
    print(f"fingerprint: {lowering.log.header.output}")
    _write_outputs(lowering, args.output, args.log)
    return EXIT_OK


def _replay_command(args: argparse.Namespace) -> int:
    reference = _load_reference(args)
    lowering = _lowering_from(args, reference, args.log)
    print(f"replayed {len(lowering.log.changes)} changes of {args.log}: every fingerprint matches")
    print(f"reference: {len(reference.module.graph.nodes)} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")
    print(f"fingerprint: {lowering.log.header.output}")
    _write_outputs(lowering, args.output)
    return EXIT_OK


def _explain_command(args: argparse.Namespace) -> int:
    from fqlower.explain import explain

    reference = _load_reference(args)
    lowering = _lowering_from(args, reference, args.log)
    print(explain(lowering, reference=reference.module).format())
    return EXIT_OK


def _bisect_command(args: argparse.Namespace) -> int:
    from fqlower.bisect import bisect

    if args.tolerance < 0:
        args.command_parser.error("--tolerance must be >= 0")
    reference = _load_reference(args)
    log = _read_log(Path(args.log))
    inputs = _inputs(args, reference.example_inputs)
    if inputs is None:
        raise _failure(
            "bisect needs inputs: --input-shape 1,3,32,32, --inputs FILE, or a maps file with "
            "example_inputs (as `fqlower lower --save-reference` writes)"
        )

    def progress(tests_run: int, current_size: int) -> None:
        _progress(args, f"  test {tests_run}: narrowing {current_size} changes")

    _progress(args, f"bisecting {len(log.changes)} changes of {args.log} (tolerance {args.tolerance:g})")
    result = bisect(
        reference.module,
        log,
        inputs,
        tolerance=args.tolerance,
        qconfig_map=reference.qconfig_map,
        node_name_to_scope=reference.node_name_to_scope,
        progress=progress,
    )
    print(result.format())
    return EXIT_FAILED if result.culprits else EXIT_OK


def _diff_command(args: argparse.Namespace) -> int:
    from fqlower.diff import (
        around,
        diff_dot,
        diff_text,
        node_changes,
        render_svg,
        snapshots,
    )

    reference = _load_reference(args)
    _progress(args, f"running the pipeline on {len(reference.module.graph.nodes)} nodes, keeping every pass's program")
    steps = snapshots(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    if args.pass_name is None:
        before, after = steps[0][1], steps[-1][1]
        before_name, after_name = "input", "output"
    else:
        which: str | int = int(args.pass_name) if args.pass_name.isdigit() else args.pass_name
        before, after = around(steps, which)
        step = which if isinstance(which, int) else [name for name, _ in steps[1:]].index(which)
        before_name, after_name = f"before {steps[step + 1][0]} (step {step})", f"after {steps[step + 1][0]} (step {step})"
    changes = node_changes(before, after)
    _progress(args, f"{before_name} -> {after_name}: {len(changes.added)} added, {len(changes.changed)} changed, {len(changes.removed)} removed")
    text = diff_text(before, after, before_name=before_name, after_name=after_name, context=args.unified)
    sys.stdout.write(text)
    if not text:
        _progress(args, "no differences")
    if args.dot or args.svg:
        dot = diff_dot(before, after, context=args.context, title=f"{before_name} -> {after_name}")
        if args.dot:
            with _writing(Path(args.dot), "DOT file") as path:
                path.write_text(dot, encoding="utf-8")
            _progress(args, f"wrote {args.dot}")
        if args.svg:
            svg = render_svg(dot)
            with _writing(Path(args.svg), "SVG file") as path:
                path.write_bytes(svg)
            _progress(args, f"wrote {args.svg}")
    return EXIT_OK


# --- parser ----------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command, these set the value; absent, the top level's stays
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress on stderr")
    return common


def _reference_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "reference",
        nargs=None if required else "?",
        metavar="REFERENCE",
        help="a torch.save'd quantized reference GraphModule (e.g. written by `fqlower lower --save-reference`); "
        "it is unpickled, so load only files you trust",
    )
    parser.add_argument("--maps", metavar="MAPS", help="torch.save'd dict with qconfig_map and node_name_to_scope (default: REFERENCE's stem + .maps.pt, if present)")


def _input_arguments(parser: argparse.ArgumentParser, which: str) -> None:
    """--input-shape / --inputs / --seed: the example inputs a command runs on."""
    parser.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE", help=f"shape of a random input {which}; repeat for several inputs")
    parser.add_argument("--inputs", metavar="FILE", help="torch.save'd inputs (a tensor or a tuple)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fqlower",
        description="Lower FX quantized reference models to native quantized ops.",
        epilog="Exit codes: 0 ok, 1 error or failed check, 2 usage. `fqlower COMMAND --help` for each command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]

    demo = commands.add_parser("demo", parents=common, help="quantize, lower and check a built-in example model")
    demo.add_argument("--backend", default="fbgemm", choices=["fbgemm", "x86", "qnnpack"])
    demo.add_argument("--out", default="fqlower-demo", help="folder for the lowered module and change log (default: %(default)s)")
    demo.set_defaults(handler=_demo)

    lower = commands.add_parser(
        "lower",
        parents=common,
        help="lower a saved reference model, or quantize a float model and lower it",
        description="Lower a saved reference model (REFERENCE [--maps]), or quantize a float model "
        "(--model, --qconfig, --input-shape) to a reference model and lower that. "
        "Prints rewrites and skips per pass and the output fingerprint.",
    )
    _reference_arguments(lower, required=False)
    lower.add_argument("--model", metavar="PATH.py[:NAME]", help="a Python file defining a module class or a model() factory")
    lower.add_argument("--qconfig", choices=QCONFIGS, help="quantization recipe for --model (default: fbgemm)")
    _input_arguments(lower, "for --model, e.g. 1,3,32,32")
    lower.add_argument("--save-reference", metavar="REF.pt", help="also write --model's reference model to REF.pt and its maps to REF.maps.pt")
    lower.add_argument("-o", "--output", metavar="OUT.pt", help="write the lowered module (torch.save; torch.load(..., weights_only=False) reads it)")
    lower.add_argument("--log", metavar="LOG.jsonl", help="write the change log")
    lower.add_argument("--keep-original-weights", action="store_true", help="as torch's keep_original_weights")
    lower.set_defaults(handler=_lower_command, command_parser=lower)

    replay = commands.add_parser(
        "replay",
        parents=common,
        help="re-derive a lowering from its change log, without matching",
        description="Apply LOG's changes to REFERENCE, checking every fingerprint; exits 1 if the log does not fit.",
    )
    _reference_arguments(replay)
    replay.add_argument("log", metavar="LOG", help="change log written by `fqlower lower --log`")
    replay.add_argument("-o", "--output", metavar="OUT.pt", help="write the lowered module")
    replay.add_argument("--keep-original-weights", action="store_true", help="as torch's keep_original_weights")
    replay.add_argument(
        "--trusted",
        action="store_true",
        help="replay a log naming callables that no lowering pass writes (logs of your own passes); "
        "replaying runs what a log names, so only for logs you trust",
    )
    replay.set_defaults(handler=_replay_command, command_parser=replay)

    explain = commands.add_parser(
        "explain",
        parents=common,
        help="say what the lowering did to each node, and why it left others alone",
        description="Explain the lowering of REFERENCE (replayed from --log if given, else lowered now).",
    )
    _reference_arguments(explain)
    explain.add_argument("--log", metavar="LOG", help="explain this change log instead of lowering again")
    explain.set_defaults(handler=_explain_command, command_parser=explain)

    bisect = commands.add_parser(
        "bisect",
        parents=common,
        help="find the changes that move the outputs by more than a tolerance",
        description="Replay LOG's changes on REFERENCE in halves to find those after which the outputs "
        "differ from the reference model's by more than --tolerance. Exits 1 if it finds any.",
    )
    _reference_arguments(bisect)
    bisect.add_argument("log", metavar="LOG", help="change log to bisect")
    bisect.add_argument("--tolerance", type=float, required=True, metavar="T", help="largest acceptable output difference")
    _input_arguments(bisect, "(default: the maps file's example inputs)")
    bisect.set_defaults(handler=_bisect_command, command_parser=bisect)

    diff = commands.add_parser(
        "diff",
        parents=common,
        help="show what the pipeline, or one pass, changed",
        description="Unified diff of the printed program before and after the whole pipeline, or one pass; "
        "optionally a Graphviz picture with the rewritten nodes highlighted.",
    )
    _reference_arguments(diff)
    diff.add_argument("--pass", dest="pass_name", metavar="NAME", help="diff around this pass (a name, or a step number as in change logs); default: input -> output")
    diff.add_argument("-U", "--unified", type=int, default=3, metavar="N", help="lines of context (default: %(default)s)")
    diff.add_argument("--dot", metavar="FILE.dot", help="write a Graphviz DOT picture of the result, changes highlighted")
    diff.add_argument("--svg", metavar="FILE.svg", help="render that picture to SVG (needs Graphviz's `dot` program)")
    diff.add_argument("--context", type=int, metavar="HOPS", help="in the picture, only nodes within HOPS edges of a change")
    diff.set_defaults(handler=_diff_command, command_parser=diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    from fqlower.errors import FqlowerError

    with warnings.catch_warnings():
        # torch.ao.quantization's own notices are not ours to repeat.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        try:
            return args.handler(args)
        except SystemExit as exit_:  # a usage error found after parsing
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            print("fqlower: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except FqlowerError as error:
            if args.debug:
                raise
            _error(str(error))
            return EXIT_FAILED
        except Exception as error:
            if args.debug:
                raise
            _error(f"{_one_line(error)} (an fqlower bug? run with --debug for the traceback)")
            return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
