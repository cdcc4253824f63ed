"""Quantization recipes: qconfig mappings and backend configs drawn for a model.
See models.py."""

from __future__ import annotations

import functools
import operator
import random
import re
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
from hypothesis import strategies as st

from gen_program import Draw, _quiet


# --------------------------------------------------------------------------- recipes

# Ordered simple -> complex for shrinking.
RECIPE_KINDS = ("static_int8", "dynamic_int8", "dynamic_fp16", "static_fp16", "weight_only")
# What a recipe's kind is drawn from: static int8 (it exercises most lowering passes)
# half of the time, shrinking towards it.
_RECIPE_KIND_CHOICES = (
    "static_int8", "dynamic_int8", "static_int8", "dynamic_fp16", "static_int8", "static_fp16", "static_int8", "weight_only",
)
BACKENDS = ("fbgemm", "x86", "qnnpack", "onednn")

# Names a recipe's code may use; its source imports only those it does use.
_QUANTIZATION_NAMES = (
    "QConfig", "QConfigMapping", "default_dynamic_qconfig", "default_qconfig", "default_weight_observer",
    "float16_dynamic_qconfig", "float16_static_qconfig", "float_qparams_weight_only_qconfig",
    "get_default_qconfig", "get_default_qconfig_mapping",
)
_BACKEND_CONFIG_IMPORTS = {
    "get_onednn_backend_config": "from torch.ao.quantization.backend_config import get_onednn_backend_config",
    "get_test_only_legacy_native_backend_config": (
        "from torch.ao.quantization.backend_config.native import get_test_only_legacy_native_backend_config"
    ),
}
_ONEDNN_TRANSPOSE_QCONFIG = (
    "# get_default_qconfig_mapping('onednn') gives transposed convs onednn's per-channel weight\n"
    "# observer: prepare_fx rejects it for nn.ConvTranspose*, and no engine prepacks per-channel\n"
    "# transposed weights for F.conv_transpose*. fbgemm/x86 use per-tensor weights for them.\n"
    "onednn_transpose_qconfig = QConfig(get_default_qconfig('onednn').activation, default_weight_observer)\n"
)


def _imports(code: str) -> str:
    """The import lines (and helper definitions) ``code`` needs."""
    if "onednn_transpose_qconfig" in code:
        code += _ONEDNN_TRANSPOSE_QCONFIG

    def used(name: str) -> bool:
        return re.search(rf"\b{name}\b", code) is not None

    lines = ["import torch.nn as nn"] if used("nn") else []
    if used("F"):
        lines.append("import torch.nn.functional as F")
    names = [name for name in _QUANTIZATION_NAMES if used(name)]
    if names:
        lines.append(f"from torch.ao.quantization import {', '.join(names)}")
    lines += [line for name, line in _BACKEND_CONFIG_IMPORTS.items() if used(name)]
    helper = "\n" + _ONEDNN_TRANSPOSE_QCONFIG if "onednn_transpose_qconfig" in code else ""
    return "\n".join(lines) + "\n" + helper


@functools.cache
def _full_namespace_source() -> str:
    return _imports(" ".join(_QUANTIZATION_NAMES) + " nn F onednn_transpose_qconfig " + " ".join(_BACKEND_CONFIG_IMPORTS))


def _qconfig_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    with _quiet():
        exec(_full_namespace_source(), namespace)
    return namespace


@attrs.frozen
class Recipe:
    """How to quantize: a qconfig mapping and a backend config, as readable code.

    kind:
        ``static_int8``: ``get_default_qconfig_mapping(backend)`` (per-channel
        weights, except qnnpack's per-tensor ones); with ``per_channel=False`` its
        global qconfig is replaced by ``default_qconfig`` (per-tensor weights, MinMax
        activations; object-type entries such as the fixed-qparams ones stay). onednn
        mappings give transposed convs per-tensor weights (see the module docstring). ``dynamic_int8``/``dynamic_fp16``/``static_fp16``:
        an empty mapping with ``default_dynamic_qconfig``/``float16_dynamic_qconfig``/
        ``float16_static_qconfig`` global (static fp16 with torch's test-only legacy
        native backend config: the default one has no static fp16 patterns).
        ``weight_only``: an empty mapping (only embeddings are quantized).
    embeddings_weight_only: ``float_qparams_weight_only_qconfig`` for nn.Embedding
        and nn.EmbeddingBag (always on for ``weight_only``).
    none_modules: submodules given qconfig ``None``, by full dotted path (``layer1.0``).
    onednn_backend_config: use onednn's backend config (``backend="onednn"`` only):
        it fuses LinearLeakyReLU/LinearTanh/ConvAdd2d, whose lowered kernels only run
        on the onednn engine (see :func:`runnable`).
    """

    kind: str
    backend: str | None = None
    per_channel: bool = True
    embeddings_weight_only: bool = False
    none_modules: tuple[str, ...] = ()
    onednn_backend_config: bool = False

    def mapping_source(self) -> str:
        transposes: list[str] = []
        if self.kind == "static_int8":
            code = f"get_default_qconfig_mapping({self.backend!r})"
            if not self.per_channel:
                code += ".set_global(default_qconfig)"
            if self.backend == "onednn":
                transposes = [
                    f".set_object_type({op}, onednn_transpose_qconfig)"
                    for n in (1, 2, 3)
                    for op in (f"nn.ConvTranspose{n}d", f"F.conv_transpose{n}d")
                ]
        elif self.kind == "weight_only":
            code = "QConfigMapping()"
        else:
            code = f"QConfigMapping().set_global({_GLOBAL_QCONFIGS[self.kind]})"
        parts = [code, *transposes]
        if self.embeddings_weight_only or self.kind == "weight_only":
            parts += [
                ".set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)",
                ".set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)",
            ]
        parts += [f".set_module_name({name!r}, None)" for name in self.none_modules]
        return parts[0] if len(parts) == 1 else "(\n    " + "\n    ".join(parts) + "\n)"

    def backend_config_source(self) -> str:
        if self.kind == "static_fp16":
            return "get_test_only_legacy_native_backend_config()"
        if self.onednn_backend_config:
            return "get_onednn_backend_config()"
        return "None"

    def source(self) -> str:
        """Python that defines ``qconfig_mapping`` and ``backend_config``."""
        code = f"qconfig_mapping = {self.mapping_source()}\nbackend_config = {self.backend_config_source()}\n"
        return _imports(code) + "\n" + code

    def qconfig_mapping(self) -> Any:
        """A fresh ``QConfigMapping`` (evaluated from :meth:`mapping_source`)."""
        with _quiet():
            return eval(self.mapping_source(), _qconfig_namespace())

    def backend_config(self) -> Any:
        return eval(self.backend_config_source(), _qconfig_namespace())

    def tags(self) -> list[str]:
        """Recipe features, for coverage checks."""
        tags = [self.kind]
        if self.kind == "static_int8":
            tags += [f"backend={self.backend}", "per_channel" if self.per_channel else "per_tensor"]
        if self.embeddings_weight_only and self.kind != "weight_only":
            tags.append("embeddings_weight_only")
        if self.none_modules:
            tags.append("none_modules")
        if self.onednn_backend_config:
            tags.append("onednn_backend_config")
        return tags


_GLOBAL_QCONFIGS = {
    "dynamic_int8": "default_dynamic_qconfig",
    "dynamic_fp16": "float16_dynamic_qconfig",
    "static_fp16": "float16_static_qconfig",
}


def _onednn_config_ok(model: nn.Module | None) -> bool:
    """Whether prepare_fx can use onednn's backend config on ``model`` at all."""
    if model is None:
        return True
    # onednn's backend config fuses Linear + nn.Tanh into LinearTanh, and prepare_fx then
    # raises LookupError: get_default_qconfig_mapping gives nn.Tanh a fixed-qparams
    # qconfig, unlike nn.Linear's. Always, so not offered for models with an nn.Tanh.
    if any(isinstance(module, nn.Tanh) for module in model.modules()):
        return False
    return not _adds_module_output_to_itself(model)


def _adds_module_output_to_itself(model: nn.Module) -> bool:
    """Whether the model computes ``m(x) + m(x)`` (one node twice) for a module call.

    onednn's conv-add fusion matches ``add(conv, conv)`` with both operands the same
    node, and its root-node getter then fails to unpack the pattern (ValueError in
    prepare_fx) -- always, so such models get no onednn backend config.
    """
    graph = torch.fx.symbolic_trace(model).graph
    return any(
        node.op == "call_function"
        and node.target in (operator.add, torch.add)
        and len(node.args) >= 2
        and node.args[0] is node.args[1]
        and getattr(node.args[0], "op", None) == "call_module"
        for node in graph.nodes
    )


def draw_recipe(d: Draw, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """Draw a :class:`Recipe` for ``model`` (its submodule names get ``None`` qconfigs)."""
    module_names = [name for name, _ in model.named_modules() if name] if model is not None else []
    kind = d.pick(_RECIPE_KIND_CHOICES)
    backend, per_channel, onednn = None, True, False
    if kind == "static_int8":
        backend = d.pick(BACKENDS)
        per_channel = not d.flag()
        if onednn_fusions and backend == "onednn" and _onednn_config_ok(model):
            onednn = d.flag()
    embeddings = kind != "weight_only" and d.flag()
    none_modules: list[str] = []
    if module_names and d.flag():
        for _ in range(d.integer(1, min(3, len(module_names)))):
            name = d.pick(module_names)
            if name not in none_modules:
                none_modules.append(name)
    return Recipe(kind, backend, per_channel, embeddings, tuple(none_modules), onednn)


def random_recipe(rng: random.Random, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """:func:`draw_recipe` driven by ``rng`` instead of hypothesis."""
    return draw_recipe(Draw.from_random(rng), model, onednn_fusions)


@st.composite
def recipes(draw: Any, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """Random recipes for ``model``: ``None`` qconfigs go to some of its submodules.

    ``onednn_fusions=True`` lets static onednn recipes use onednn's backend config
    (lowered models with its fused kernels are not :func:`runnable` here); without it
    onednn recipes use the native backend config, and every example is runnable.
    """
    return draw_recipe(Draw.from_hypothesis(draw), model, onednn_fusions)
