"""Fuzzed inputs (gentle and harsh mutations drawn on a zoo case) and how they are
run and compared. See test_fuzz.py."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx
from hypothesis import reject
from hypothesis import strategies as st
from fuzz_graph import Draw
from fuzz_state import DamageQconfig, EditArguments, MUTATIONS, parameter_names
from fuzz_subject import CASE_IDS, Subject, base, pick

from fqlower.compare import graph_differences, module_type_differences, state_dict_differences, values_equal
from fqlower.reference import ReferenceModel, torch_lowering

def draw_gentle(draw: Draw, s: Subject) -> Any:
    """A mutation that keeps the model runnable and lowerable: arguments moved to keywords
    (what the model computes stays) or a qconfig set to None. Half the fuzzer's examples use only these, so that enough of them get as
    far as a comparison with torch's lowering (the other mutations mostly make models
    that do not run or that fqlower refuses)."""
    kind = pick(draw, ("qconfig", "qconfig", "keywords"))
    if kind == "keywords":
        options = [
            n
            for n in s.nodes()
            if n.op == "call_function" and n.args and len(parameter_names(n.target) or ()) >= len(n.args)
            and not set((parameter_names(n.target) or ())[: len(n.args)]) & set(n.kwargs)
        ]
        if options:
            node = pick(draw, options)
            return EditArguments(node.name, "to keywords", draw(st.integers(0, len(node.args) - 1)))
    if isinstance(s.qconfig_map, dict) and s.qconfig_map:
        return DamageQconfig(pick(draw, sorted(k for k in s.qconfig_map if isinstance(k, str))), "None")
    return None


def numbered(title: str, items: Any) -> str:
    """`title` and one numbered line per item: how a drawn example prints."""
    return "\n".join([title, *(f"  {index}. {item!r}" for index, item in enumerate(items, start=1))])


class PrintsByLine:
    """Hypothesis prints a drawn value with `_repr_pretty_`: keep its repr's lines."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        for index, line in enumerate(repr(self).splitlines()):
            if index:
                printer.break_()
            printer.text(line)


class Fuzzed(PrintsByLine):
    """A mutated reference model, its maps and the example inputs."""

    def __init__(self, case: str, mutations: tuple[Any, ...], subject: Subject, inputs: tuple[Any, ...], gentle: bool = False):
        self.gentle = gentle
        self.case = case
        self.mutations = mutations
        self.module = subject.gm
        self.qconfig_map = subject.qconfig_map
        self.scope = subject.scope
        self.inputs = inputs

    @property
    def touches_qparams(self) -> bool:
        """Whether a mutation changed a constant or which constant a node reads."""
        return any(getattr(mutation, "touches_qparams", False) for mutation in self.mutations)

    def __repr__(self) -> str:
        return numbered(f"{self.case} with {len(self.mutations)} mutation(s):", self.mutations)



@st.composite
def fuzzed_inputs(draw: Draw) -> Fuzzed:
    case = pick(draw, CASE_IDS)
    ref = base(case)
    subject = Subject(ref)
    applied = []
    gentle = draw(st.booleans())
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw_gentle(draw, subject) if gentle else pick(draw, MUTATIONS).draw(draw, subject)
        if mutation is None:
            continue
        mutation.apply(subject)
        applied.append(mutation)
        try:
            subject.gm.recompile()
        except Exception:
            reject()  # FX cannot generate code for it (e.g. getattr with one argument): not a model
    return Fuzzed(case, tuple(applied), subject, ref.example_inputs, gentle)


# --- running models --------------------------------------------------------------------------


def clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(clone(item) for item in value)
    return value


class Failed:
    """A call that raised: the exception, for messages."""

    def __init__(self, error: BaseException):
        self.error = error

    def __repr__(self) -> str:
        return f"{type(self.error).__name__}: {str(self.error).splitlines()[0] if str(self.error) else ''}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's lowering and some mutated models print; keep the test output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run(model: Any, inputs: tuple[Any, ...]) -> Any:
    """The model's outputs on fresh copies of `inputs`, or Failed."""
    try:
        with torch.no_grad(), _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. quantized cat of inputs with different qparams
            return model(*clone(inputs))
    except Exception as error:
        return Failed(error)


def reference_outputs(fuzzed: Fuzzed) -> Any:
    """The mutated model's outputs (on a copy: some mutations run in-place ops), or Failed."""
    try:
        model = copy.deepcopy(fuzzed.module)
    except Exception as error:
        return Failed(error)
    return run(model, fuzzed.inputs)


def lower_with_torch(fuzzed: Fuzzed) -> Any:
    try:
        with _quiet():
            return torch_lowering(ReferenceModel(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope, fuzzed.inputs))
    except Exception as error:
        return Failed(error)


def far_from(ours: Any, ref: Any, path: str = "output") -> str | None:
    """Why `ours` is not within 0.25 * max|ref| + 1e-3 of `ref` (finite positions), or None."""
    if isinstance(ref, torch.Tensor):
        if not isinstance(ours, torch.Tensor):
            return f"{path}: a {type(ours).__name__}, not a tensor"
        o = (ours.dequantize() if ours.is_quantized else ours).detach().double()
        r = (ref.dequantize() if ref.is_quantized else ref).detach().double()
        if o.shape != r.shape:
            return f"{path}: shape {tuple(o.shape)} vs the reference's {tuple(r.shape)}"
        both = torch.isfinite(o) & torch.isfinite(r)
        if not bool(both.any()):
            return None
        bound = 0.25 * float(r[both].abs().max()) + 1e-3
        error = float((o - r)[both].abs().max())
        return None if error <= bound else f"{path}: max |ours - reference| = {error:.4g} > {bound:.4g}"
    if isinstance(ref, (tuple, list)):
        if not isinstance(ours, (tuple, list)) or len(ours) != len(ref):
            return f"{path}: {type(ours).__name__} vs the reference's {type(ref).__name__} of {len(ref)}"
        for index, (a, b) in enumerate(zip(ours, ref)):
            problem = far_from(a, b, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(ref, dict):
        if not isinstance(ours, dict) or ours.keys() != ref.keys():
            return f"{path}: keys differ"
        for key in ref:
            problem = far_from(ours[key], ref[key], f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return None if values_equal(ours, ref) else f"{path}: {ours!r} vs the reference's {ref!r}"


def differences_from_torch(expected: torch.fx.GraphModule, actual: torch.fx.GraphModule, expected_out: Any, actual_out: Any) -> list[str]:
    """`lowering_differences`, with outputs computed on separate copies of the inputs;
    two results that both fail to run have equal outputs, one that fails differs."""
    found = graph_differences(expected, actual) + module_type_differences(expected, actual)
    found += state_dict_differences(expected, actual)
    failed = (isinstance(expected_out, Failed), isinstance(actual_out, Failed))
    if failed == (True, True):
        return found
    if any(failed) or not values_equal(expected_out, actual_out):
        found.append("outputs differ")
    return found


def _unexpected(call: str, fuzzed: Fuzzed, error: BaseException) -> AssertionError:
    return AssertionError(f"{call} raised {type(error).__name__}: {error}\non {fuzzed!r}")
