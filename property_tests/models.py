"""Hypothesis strategies for random float models, quantization recipes and reference models.

* :func:`float_models` draws a :class:`GeneratedModel`: a real ``nn.Module`` whose
  forward interprets a fixed list of *blocks* (a random DAG of 1-6 of them), each an
  instance of a pattern family fqlower lowers (see :data:`BLOCK_KINDS`).
* :func:`recipes` draws a :class:`Recipe`: static int8 (fbgemm/x86/qnnpack/onednn,
  per-channel or per-tensor weights), dynamic int8, dynamic fp16, static fp16, or
  weight-only embeddings alone; optionally weight-only embeddings on top, and ``None``
  qconfigs for some of the model's submodules.
* :func:`examples` composes both, calibrates and captures the reference model with
  :func:`fqlower.reference.reference_model` and returns an :class:`Example`.

Readable failures: ``GeneratedModel.source()`` is a self-contained Python program that
rebuilds the model (class definitions with ``__init__`` and ``forward`` written out, the
seed, and ``make_inputs``); it is the model's repr. An :class:`Example` prints as that
program followed by the recipe and the ``reference_model`` call, so a shrunk failure
is a reproducer you can paste.

Streams. Every value a block reads or writes is a float tensor ``[batch, *shape]``
whose per-sample ``shape`` is known while drawing: rank 1 ``(features,)``, rank 2
``(channels, length)`` (conv1d/LSTM layout), rank 3 ``(channels, h, w)`` and rank 4
``(channels, d, h, w)``; or an int64 index tensor ``[batch, length]`` for embeddings.
A block picks its input among the earlier values it accepts (the most recent first,
so shrinking makes chains), or asks for a fresh model input of a shape it accepts;
flatten/unflatten/squeeze/unsqueeze blocks convert between ranks. Models never
depend on the batch size (reshapes use ``-1`` or ``size(0)``/``shape[0]``), so they
are calibrated on a large batch (:data:`CALIBRATION_BATCH`: torch's HistogramObserver
takes ~0.3 s per observer on an 8-element tensor and ~3 ms on 8 k) and checked on a
small one (:data:`CHECK_BATCH`). The model returns every value no block consumed.

Blocks. A block's ``body`` is Python statements (``v3 = self.b3_conv(v1)``), its
``init`` the constructor expressions of its modules/parameters. Unscoped blocks put
them on the model (``b3_conv``); scoped ones in their own submodule (class ``Block3``)
one to three levels deep, in containers named as real models name them (``b3``,
``layer2.0``, ``encoder.layers.1``; see scopes.py), so functional ops get a module
scope and ``set_module_name`` with its full path (or a container's) switches a whole
block off. ``GeneratedModel.forward`` interprets the blocks in order
(exec of the compiled statements; no data-dependent control flow), so
``torch.fx.symbolic_trace`` and ``prepare_fx`` trace it like hand-written code, and
``source()`` prints the very same statements.

Shrinking: the block count is drawn first and each block is one hypothesis span
(hypothesis lowers the count and deletes a span together, so any block can go); every
choice is an integer index into a list ordered simple -> complex (kinds, variants,
inputs: the most recent value first; placements: flat first), flags shrink to False
(bias on), and an input choice always makes the same draws, so deleting the block
that created an input does not shift the choices after it. Failures shrink to one or two simple blocks.

Recipes are half static int8 (the recipe most lowering passes need), shrinking to it.

torch 2.13 combinations that always fail in ``prepare_fx`` are unreachable:

* a grouped ``nn.ConvTranspose`` followed by BatchNorm (``fuse_conv_bn_weights`` with
  ``transpose=True`` mis-shapes grouped weights): never drawn;
* ``get_default_qconfig_mapping('onednn')`` with transposed convs (per-channel
  weights: prepare_fx rejects them for modules; no prepack for functionals): onednn
  recipes give transposed convs per-tensor weights, as fbgemm/x86 mappings do;
* onednn's backend config (opt-in, see :func:`recipes`) with ``nn.Tanh`` (LinearTanh
  fusion raises LookupError: Tanh's fixed-qparams qconfig differs from Linear's) or
  with ``m(x) + m(x)`` (its conv-add root-node getter fails to unpack): not offered
  for such models.

The code: ``gen_program.py`` (constants, specs, ``GeneratedModel``, the drawing
helpers), ``gen_blocks.py`` and ``gen_weighted.py`` (the block kinds, without and with
weights), ``gen_recipes.py`` (recipes); this module puts the kinds in
:data:`BLOCK_KINDS` and composes models, recipes and examples.

The same drawing code runs on a ``random.Random`` (:func:`random_model_spec`,
:func:`random_recipe`) for tests that need many cheap draws without hypothesis.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
import torch.ao.nn.intrinsic as nni
import torch.fx
from hypothesis import strategies as st

from gen_blocks import _k_binary, _k_cat, _k_clamp, _k_contiguous, _k_default_op, _k_dropout, _k_fixed_qparams, _k_flatten, _k_hardtanh, _k_matmul, _k_mean, _k_norm, _k_pool, _k_relu, _k_shape, _k_squeeze, _k_unflatten, _k_unsqueeze
from gen_program import Block, CALIBRATION_BATCH, CHECK_BATCH, Draw, GeneratedModel, ModelSpec, Value, _Builder, _pretty_lines, _quiet
from gen_recipes import RECIPE_KINDS, Recipe, _qconfig_namespace, draw_recipe, random_recipe, recipes
from gen_weighted import _k_conv, _k_conv_transpose, _k_embedding, _k_functional_conv, _k_functional_linear, _k_linear, _k_rnn, _k_rnn_cell

from fqlower.reference import ReferenceModel, reference_model

__all__ = [
    "BLOCK_KINDS",
    "CALIBRATION_BATCH",
    "CHECK_BATCH",
    "RECIPE_KINDS",
    "Block",
    "Draw",
    "Example",
    "GeneratedModel",
    "ModelSpec",
    "Recipe",
    "Value",
    "block_tags",
    "build_example",
    "draw_model_spec",
    "draw_recipe",
    "examples",
    "float_models",
    "model_specs",
    "random_model_spec",
    "random_recipe",
    "recipes",
    "runnable",
    "single_threaded",
]

BLOCK_KINDS: dict[str, Callable[[_Builder], None]] = {
    "relu": _k_relu,
    "contiguous": _k_contiguous,
    "dropout": _k_dropout,
    "hardtanh": _k_hardtanh,
    "clamp": _k_clamp,
    "fixed_qparams": _k_fixed_qparams,
    "default_op": _k_default_op,
    "shape": _k_shape,
    "unsqueeze": _k_unsqueeze,
    "squeeze": _k_squeeze,
    "flatten": _k_flatten,
    "unflatten": _k_unflatten,
    "mean": _k_mean,
    "pool": _k_pool,
    "norm": _k_norm,
    "binary": _k_binary,
    "matmul": _k_matmul,
    "cat": _k_cat,
    "linear": _k_linear,
    "conv": _k_conv,
    "conv_transpose": _k_conv_transpose,
    "functional_linear": _k_functional_linear,
    "functional_conv": _k_functional_conv,
    "rnn": _k_rnn,
    "rnn_cell": _k_rnn_cell,
    "embedding": _k_embedding,
}
_KIND_NAMES = tuple(BLOCK_KINDS)


def draw_model_spec(d: Draw, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    """Draw a :class:`ModelSpec` (no torch work); ``kinds`` restricts the block kinds.

    The block count comes first and each block is one group (a hypothesis span):
    the shrinker lowers the count and deletes a block's span together, so any block
    can go, not only the last ones (input choices keep later choices aligned, see
    :meth:`_Builder.fresh_shape`).
    """
    count = d.integer(1, max_blocks)
    seed = d.integer(0, 2**16 - 1)
    names = tuple(kinds) if kinds is not None else _KIND_NAMES
    b = _Builder(d)

    def block(g: Draw) -> None:
        b.d = g
        BLOCK_KINDS[g.pick(names)](b)

    for _ in range(count):
        d.group(block)
    b.d = d
    produced = [block.output for block in b.blocks]
    outputs = tuple(name for name in produced if name not in b.consumed)
    # Inputs in order of first use; that is the forward signature.
    return ModelSpec(inputs=tuple(b.inputs), blocks=tuple(b.blocks), outputs=outputs, seed=seed)


def random_model_spec(rng: random.Random, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    """:func:`draw_model_spec` driven by ``rng`` instead of hypothesis."""
    return draw_model_spec(Draw.from_random(rng), max_blocks, kinds)


@st.composite
def model_specs(draw: Any, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    return draw_model_spec(Draw.from_hypothesis(draw), max_blocks, kinds)


def float_models(max_blocks: int = 6, kinds: Sequence[str] | None = None) -> st.SearchStrategy[GeneratedModel]:
    """Random float models of 1..``max_blocks`` blocks (see the module docstring)."""
    return model_specs(max_blocks, kinds).map(GeneratedModel.build)


# --------------------------------------------------------------------------- examples


@attrs.frozen(repr=False, eq=False)
class Example:
    """A float model, a recipe, the captured reference model and inputs to check on.

    ``reference.example_inputs`` are the calibration inputs
    (:data:`CALIBRATION_BATCH` samples); ``inputs_for_checking`` are fresh ones
    (:data:`CHECK_BATCH` samples) of the same per-sample shapes.
    """

    model_source: str
    recipe: Recipe
    float_model: GeneratedModel
    reference: ReferenceModel
    inputs_for_checking: tuple[torch.Tensor, ...]
    data_seed: int

    def __repr__(self) -> str:
        return (
            self.model_source
            + "\n"
            + self.recipe.source()
            + "\nfrom fqlower.reference import reference_model\n\n"
            + "torch.set_num_threads(1)\n"
            + f"reference = reference_model(\n    model, make_inputs({CALIBRATION_BATCH}, {self.data_seed}), "
            + "qconfig_mapping, backend_config=backend_config\n)\n"
            + f"inputs_for_checking = make_inputs({CHECK_BATCH}, {self.data_seed + 1})\n"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        _pretty_lines(printer, repr(self))


@functools.cache
def _shared_backend_config(source: str) -> Any:
    """One BackendConfig per recipe source, shared by all examples.

    torch builds the native config from scratch whenever it is given ``None`` (three
    times per example: fuse, prepare, convert; ~10 ms each); passing the same,
    equal object instead changes nothing else (prepare/convert/fuse substitute
    ``get_native_backend_config()`` for ``None`` and never mutate the config).
    """
    if source == "None":
        from torch.ao.quantization.backend_config import get_native_backend_config

        return get_native_backend_config()
    return eval(source, _qconfig_namespace())


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch single-threaded: on a busy machine every OpenMP region of a tiny op
    otherwise waits ~10 ms for a second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_example(model: GeneratedModel, recipe: Recipe, data_seed: int) -> Example:
    """Calibrate and capture ``model`` under ``recipe`` (what :func:`examples` draws).

    Runs single-threaded (the printed reproducer says so too: thread count can change
    float reductions, hence observed ranges, in the last bit).
    """
    calibration = model.make_inputs(CALIBRATION_BATCH, data_seed)
    with _quiet(), single_threaded():
        reference = reference_model(
            model,
            calibration,
            recipe.qconfig_mapping(),
            backend_config=_shared_backend_config(recipe.backend_config_source()),
        )
    return Example(
        model_source=model.source(),
        recipe=recipe,
        float_model=model,
        reference=reference,
        inputs_for_checking=model.make_inputs(CHECK_BATCH, data_seed + 1),
        data_seed=data_seed,
    )


@st.composite
def examples(
    draw: Any, max_blocks: int = 6, kinds: Sequence[str] | None = None, onednn_fusions: bool = False
) -> Example:
    """A drawn model and recipe, calibrated and captured as a reference model."""
    model = draw(float_models(max_blocks, kinds))
    recipe = draw(recipes(model, onednn_fusions))
    data_seed = draw(st.integers(0, 2**16 - 1))
    return build_example(model, recipe, data_seed)


# Fused modules whose lowered kernels exist only in the onednn engine (quantized::
# linear_leaky_relu, linear_tanh, conv2d_add, conv2d_add_relu); on this machine's
# fbgemm/x86 engines they crash or segfault.
ONEDNN_ONLY_FUSED = (nni.LinearLeakyReLU, nni.LinearTanh, nni.ConvAdd2d, nni.ConvAddReLU2d)


def runnable(example: Example) -> bool:
    """False when the lowered model would need onednn-only fused kernels."""
    return not any(isinstance(module, ONEDNN_ONLY_FUSED) for module in example.reference.module.modules())


def block_tags(spec: ModelSpec) -> list[str]:
    """``kind`` and ``kind:variant`` of every block, ``scoped`` and ``depth=<levels>``, for coverage checks."""
    tags = []
    for block in spec.blocks:
        tags += [block.kind, f"{block.kind}:{block.variant}", f"depth={len(block.path)}"]
        if block.scoped:
            tags.append("scoped")
    return tags
