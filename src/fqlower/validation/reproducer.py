"""A refuted change as something to read and to run without fqlower.

    describe_inputs(verdict.inputs, verdict.counterexample)
        "input %x: quint8 [8, 3, 6, 6] scale 0.0236 zero_point 0 codes 0..127"
    script = write_reproducer(verdict, "deconv.pt")     # saves both sides and the inputs
    exec(script)                                         # prints the error of each output

The saved file holds the two sides of the change (the matched one and the produced
one, with their modules and packed weights) as TorchScript traced on the
counterexample, and its inputs; the script loads it with torch alone, runs both on
the quantized engine the refutation was found on, and prints how far apart each
output is, after the code of both sides. (TorchScript, because a GraphModule holding
a quantized conv module does not unpickle: the module's `__setstate__` leaves it
without `_modules`, which GraphModule's unpickler retraces through.)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fqlower.errors import FqlowerError
from fqlower.validation.verdicts import REFUTED, Verdict


def describe_inputs(names: Sequence[str], values: Sequence[Any]) -> str:
    """One phrase per input: dtype, shape, quantization and range of a tensor, else its value."""
    return "; ".join(f"input %{name}: {describe_value(value)}" for name, value in zip(names, values)) or "no inputs"


def describe_value(value: Any) -> str:
    if not isinstance(value, torch.Tensor):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    kind = f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if value.is_quantized and value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        codes = value.int_repr()
        span = f" codes {int(codes.min())}..{int(codes.max())}" if codes.numel() else ""
        return f"{kind} scale {value.q_scale():.4g} zero_point {value.q_zero_point()}{span}"
    if value.is_quantized:
        return f"{kind} per channel"
    if value.numel() and (value.is_floating_point() or not value.dtype.is_complex):
        return f"{kind} in [{float(value.min()):.4g}, {float(value.max()):.4g}]"
    return kind


SCRIPT = '''\
# fqlower reproducer: {pass_name}/{rule} at %{anchor} was refuted by translation validation:
# {reason}
# {inputs}
#
# matched subgraph (before the change):
{before_code}
# produced subgraph (after the change):
{after_code}
import io
import sys

import torch

torch.backends.quantized.engine = {engine!r}
saved = torch.load({path!r}, weights_only=False)
before, after = (torch.jit.load(io.BytesIO(saved[side])) for side in ("before", "after"))
with torch.no_grad():
    expected, produced = before(*saved["inputs"]), after(*saved["inputs"])
for name, old, new in zip({outputs!r}, expected, produced):
    old, new = (t.dequantize() if isinstance(t, torch.Tensor) and t.is_quantized else t for t in (old, new))
    error = float((old.float() - new.float()).abs().max()) if isinstance(old, torch.Tensor) else float(old != new)
    sys.stdout.write(f"%{{name}}: the produced subgraph is off by {{error:.4g}}\\n")
'''


def write_reproducer(verdict: Verdict, path: str | Path) -> str:
    """Save a refuted verdict's sides and inputs to `path` and return a script (torch
    only) that runs them and prints each output's error."""
    if verdict.status != REFUTED or verdict.sides is None or verdict.counterexample is None:
        raise FqlowerError(f"only a refuted change has a reproducer; {verdict.change.rule} at {verdict.change.anchor!r} is {verdict.status}", node=verdict.change.anchor)
    path = Path(path).resolve()
    sides, inputs = verdict.sides, verdict.counterexample
    before, after = sides.before.module(), sides.after.module()
    saved = {"before": _compiled(before, inputs, verdict), "after": _compiled(after, inputs, verdict), "inputs": inputs}
    torch.save(saved, str(path))
    change = verdict.change
    return SCRIPT.format(
        pass_name=change.pass_name,
        rule=change.rule,
        anchor=change.anchor,
        reason=verdict.reason.replace("\n", " "),
        inputs=describe_inputs(verdict.inputs, verdict.counterexample),
        before_code=_commented(before.code),
        after_code=_commented(after.code),
        engine=torch.backends.quantized.engine,
        path=str(path),
        outputs=list(sides.before.outputs),
    )


def _compiled(module: torch.fx.GraphModule, inputs: tuple[Any, ...], verdict: Verdict) -> bytes:
    """`module` as TorchScript bytes: traced on `inputs`, or scripted where tracing fails."""
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's tracer warns about the scalars it bakes in: intended here
            compiled = torch.jit.trace(module, inputs, check_trace=False)
    except Exception as traced:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = torch.jit.script(module)
        except Exception as scripted:
            raise FqlowerError(
                f"cannot save the subgraphs of {verdict.change.rule} at {verdict.change.anchor!r}: tracing fails ({traced}), scripting fails ({scripted})",
                node=verdict.change.anchor,
            ) from scripted
    torch.jit.save(compiled, buffer)
    return buffer.getvalue()


def _commented(code: str) -> str:
    return "\n".join(f"#   {line}" for line in code.strip().splitlines())
