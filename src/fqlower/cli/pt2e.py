"""The command line's PT2E side: quantizing a float model with PT2E (torch.export,
torchao's X86InductorQuantizer, convert_pt2e) for `fqlower lower --model ... --pt2e`,
and the demo's second half: DemoNet that way, lowered by fqlower and by torchao's own
x86 lowering, compared.

fqlower's library never imports torchao; the command line does, to make PT2E models and
to run the oracle, with torchao's loader noise ("Failed to load ... .so" on a CPU
machine) kept out of the output.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torchao's import and export's machinery talk on stderr and through warnings: not here."""
    logging.disable(logging.WARNING)  # torchao's loader, torch's pytree registry (handlers hold stderr)
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def torchao_api() -> Any | None:
    """(X86 quantizer module, prepare_pt2e, convert_pt2e, lower_pt2e_quantized_to_x86), or None without torchao."""
    try:
        with quiet():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
            from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        return None
    return x86, prepare_pt2e, convert_pt2e, lower_pt2e_quantized_to_x86


def pt2e_converted(model: torch.nn.Module, inputs: tuple[Any, ...]) -> torch.fx.GraphModule:
    """`model` exported, prepared with torchao's X86InductorQuantizer (its default static
    config), calibrated on `inputs` and converted: what convert_pt2e returns."""
    api = torchao_api()
    if api is None:
        raise ImportError("PT2E quantization needs torchao: pip install 'fqlower[pt2e]'")
    x86, prepare_pt2e, convert_pt2e, _ = api
    with quiet():
        exported = torch.export.export(model.eval(), inputs).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        prepared(*inputs)
        converted: torch.fx.GraphModule = convert_pt2e(prepared)
    return converted


def native_int8_ops(module: torch.fx.GraphModule) -> int:
    return sum(1 for node in module.graph.nodes if node.op == "call_function" and str(node.target).startswith("onednn.") and "prepack" not in str(node.target))


def pt2e_demo() -> bool:
    """Print the PT2E comparison; True when fqlower's model computes what torchao's does."""
    import fqlower
    from fqlower.compare import ModelSnapshot
    from fqlower.examples import DemoNet, demo_inputs

    api = torchao_api()
    if api is None:
        print("\nPT2E front end: torchao is not installed (pip install 'fqlower[pt2e]'): skipped")
        return True
    lower_with_torchao = api[3]
    print("\nQuantizing DemoNet with PT2E (torch.export, torchao's X86InductorQuantizer, convert_pt2e)")
    torch.manual_seed(0)
    calibration = demo_inputs(batch=32)
    converted = pt2e_converted(DemoNet(), calibration)
    snapshot = ModelSnapshot.of(converted)
    started = time.perf_counter()
    lowering = fqlower.lower_pt2e(converted)
    ours_seconds = time.perf_counter() - started
    with quiet():
        started = time.perf_counter()
        theirs = lower_with_torchao(copy.deepcopy(converted), calibration)
        torchao_seconds = time.perf_counter() - started
    with torch.no_grad():
        mine, expected, reference = lowering.module(*calibration), theirs(*calibration), converted(*calibration)
    difference = float((mine - expected).abs().max())
    print(f"fqlower: {len(lowering.log.changes)} rewrites, {native_int8_ops(lowering.module)} onednn int8 kernels, {1e3 * ours_seconds:.1f} ms")
    print(f"torchao's lower_pt2e_quantized_to_x86: {native_int8_ops(theirs)} onednn int8 kernels, {1e3 * torchao_seconds:.0f} ms")
    print(f"fqlower/torchao time: {ours_seconds / torchao_seconds:.3f}")
    print(f"largest difference from torchao's model: {difference:.3g} (from the converted model: {float((mine - reference).abs().max()):.3g})")
    mutated = snapshot.differences(converted)
    print(f"caller's model unchanged: {not mutated}")
    return difference <= 1e-4 * float(expected.abs().max()) and not mutated
