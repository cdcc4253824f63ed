"""Example inputs and float models: --inputs/--input-shape, --model path.py[:Name],
and quantizing a float model into a reference with a --qconfig recipe."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from fqlower.cli.files import _existing, _read_torch
from fqlower.cli.output import _failure, _one_line, _progress

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
    if getattr(args, "pt2e", False):
        return _pt2e_reference(args, model, inputs)
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


def _pt2e_reference(args: argparse.Namespace, model: Any, inputs: tuple[Any, ...]) -> Any:
    """--model quantized with PT2E: convert_pt2e's model, as a reference without maps."""
    from fqlower.cli.files import _Reference
    import torch

    from fqlower.cli.pt2e import pt2e_converted

    _progress(args, f"quantizing {args.model} with PT2E (torch.export, X86InductorQuantizer): calibrate on {_describe_inputs(inputs)}, convert_pt2e")
    try:
        converted = pt2e_converted(model, inputs)
        # exported once more, as --save-reference writes it (a PT2E model does not pickle):
        # the change log then fits the saved file too
        module = torch.export.export(converted, inputs).module()
    except Exception as error:
        raise _failure(f"quantizing {args.model} with PT2E failed: {_one_line(error)}") from None
    return _Reference(module, None, None, inputs)


def _describe_inputs(inputs: Sequence[Any]) -> str:
    shapes = [f"{'x'.join(map(str, item.shape))}" if hasattr(item, "shape") else type(item).__name__ for item in inputs]
    return "random inputs " + ", ".join(shapes)
