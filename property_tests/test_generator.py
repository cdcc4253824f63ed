"""Properties of the model/recipe/example generator itself (see models.py).

- Every drawn float model runs on its inputs with the output shapes its spec
  promises, for any batch size, and traces with `torch.fx.symbolic_trace` into a
  graph that computes the same.
- `source()` is exec'd into an equivalent model: same module types at the same
  paths, identical state_dict, same traced graph, bit-identical outputs, same inputs.
- Every example's reference model runs on its checking inputs, is runnable, and its
  printed repr is a reproducer that rebuilds the same reference model.
- Recipes build fresh, equal mappings from their source.
- Coverage: over a few hundred draws every block kind, every pattern family of the
  brief and every recipe feature occurs; every kind builds a reference model under
  every recipe kind; shrinking reaches few, simple, flat blocks.
- Values the generator marks contiguous are (it only draws `view` on those).
- Nesting: scoped blocks live one, two and three levels deep in shared containers
  named like real models' (`layer1.0`, `encoder.layers.0`), functional linear/conv
  too; such models prepare/convert with the op scoped at the full path, their source
  rebuilds them, and `None` qconfigs by full dotted path switch blocks off.

Example counts come from the hypothesis profiles in conftest.py.
"""

from __future__ import annotations

import collections
import functools
import random
import re
from typing import Any

import torch
import torch.fx
from hypothesis import find, given
from models import (
    BLOCK_KINDS,
    CHECK_BATCH,
    RECIPE_KINDS,
    Example,
    GeneratedModel,
    Recipe,
    block_tags,
    build_example,
    examples,
    float_models,
    model_specs,
    random_model_spec,
    random_recipe,
    recipes,
    runnable,
    single_threaded,
)

from fqlower.compare import graph_differences, state_dict_differences, values_equal


def flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, tuple) else [value]


def module_types(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """(path, type) of every submodule; the generated Block<i> classes by name only."""
    return [
        (name, type(module) if type(module).__module__.startswith("torch.") else type(module).__name__)
        for name, module in model.named_modules()
        if name
    ]


def run(model: torch.nn.Module, inputs: tuple[Any, ...]) -> Any:
    with torch.no_grad(), single_threaded():
        return model(*inputs)


# --------------------------------------------------------------------------- float models


@given(float_models())
def test_float_model_runs_with_the_promised_shapes_for_any_batch(model: GeneratedModel) -> None:
    shapes = {block.output: block.shape for block in model.spec.blocks}
    for batch in (CHECK_BATCH, 3):
        outputs = flat(run(model, model.make_inputs(batch, seed=0)))
        assert len(outputs) == len(model.spec.outputs)
        for name, output in zip(model.spec.outputs, outputs):
            assert output.dtype == torch.float32
            assert tuple(output.shape) == (batch, *shapes[name]), name


@given(float_models())
def test_values_marked_contiguous_are_contiguous(model: GeneratedModel) -> None:
    """The bookkeeping that decides where `view` may be drawn is conservative."""
    with torch.no_grad(), single_threaded():
        values = model.run_values(*model.make_inputs(CHECK_BATCH, seed=2))
    for block in model.spec.blocks:
        if block.contiguous:
            assert values[block.output].is_contiguous(), block.output


@given(float_models())
def test_float_model_traces_into_an_equivalent_graph(model: GeneratedModel) -> None:
    traced = torch.fx.symbolic_trace(model)
    inputs = model.make_inputs(CHECK_BATCH, seed=1)
    assert values_equal(run(traced, inputs), run(model, inputs))
    placeholders = [node.target for node in traced.graph.nodes if node.op == "placeholder"]
    assert placeholders == [value.name for value in model.spec.inputs]


@given(float_models())
def test_source_rebuilds_an_equivalent_model(model: GeneratedModel) -> None:
    namespace: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        exec(compile(model.source(), "<model source>", "exec"), namespace)
    rebuilt = namespace["model"]

    assert not rebuilt.training
    assert module_types(rebuilt) == module_types(model)
    assert state_dict_differences(model, rebuilt) == []
    assert graph_differences(torch.fx.symbolic_trace(model), torch.fx.symbolic_trace(rebuilt)) == []

    inputs = namespace["make_inputs"](CHECK_BATCH, 7)
    assert values_equal(inputs, model.make_inputs(CHECK_BATCH, 7))
    assert values_equal(run(rebuilt, inputs), run(model, inputs))


def test_the_model_repr_is_its_source() -> None:
    model = GeneratedModel.build(random_model_spec(random.Random(0)))
    assert repr(model) == model.source()
    assert "class Model(nn.Module):" in model.source()


# --------------------------------------------------------------------------- recipes and examples


@given(float_models(max_blocks=3).flatmap(lambda model: recipes(model, onednn_fusions=True)))
def test_recipe_builds_fresh_equal_mappings(recipe: Any) -> None:
    first, second = recipe.qconfig_mapping(), recipe.qconfig_mapping()
    assert first is not second
    assert repr(first.to_dict()) == repr(second.to_dict())
    assert (recipe.backend_config() is None) == (recipe.backend_config_source() == "None")
    assert recipe.mapping_source() in recipe.source()


@given(examples())
def test_reference_model_runs_on_the_checking_inputs(example: Example) -> None:
    assert runnable(example)  # onednn fusions are opt-in
    reference = example.reference
    expected = flat(run(example.float_model, example.inputs_for_checking))
    actual = flat(run(reference.module, example.inputs_for_checking))
    assert [tuple(value.shape) for value in actual] == [tuple(value.shape) for value in expected]
    assert [value.dtype for value in actual] == [value.dtype for value in expected]


@given(examples(max_blocks=3))
def test_example_repr_is_a_reproducer(example: Example) -> None:
    namespace: dict[str, Any] = {}
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            exec(compile(repr(example), "<example repr>", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    again = namespace["reference"]
    assert graph_differences(example.reference.module, again.module) == []
    assert state_dict_differences(example.reference.module, again.module) == []
    assert values_equal(namespace["inputs_for_checking"], example.inputs_for_checking)


# --------------------------------------------------------------------------- coverage

# The pattern families of the brief, as regexes over `kind:variant` block tags.
FAMILIES = {
    "Linear module": r"^linear:nn\.Linear$",
    "Linear + BatchNorm1d": r"^linear:.*BatchNorm1d",
    "Linear + ReLU": r"^linear:nn\.Linear\+(nn\.ReLU|F\.relu|torch\.relu)$",
    "Linear + LeakyReLU/Tanh": r"^linear:.*(LeakyReLU|Tanh)",
    "Conv1d": r"^conv:nn\.Conv1d",
    "Conv2d": r"^conv:nn\.Conv2d",
    "Conv3d": r"^conv:nn\.Conv3d",
    "Conv + BatchNorm + ReLU": r"^conv:.*BatchNorm\+",
    "ConvTranspose1d": r"^conv_transpose:nn\.ConvTranspose1d",
    "ConvTranspose2d": r"^conv_transpose:nn\.ConvTranspose2d",
    "F.linear positional": r"^functional_linear:F\.linear\(x, w, b\)",
    "F.linear keywords": r"^functional_linear:F\.linear\((x, weight=|input=)",
    "F.linear + relu": r"^functional_linear:.*\+(F|torch)\.relu",
    "F.conv1d": r"^functional_conv:F\.conv1d",
    "F.conv2d defaults": r"^functional_conv:F\.conv2d defaults",
    "F.conv2d keywords": r"^functional_conv:F\.conv2d keywords",
    "F.conv2d + relu": r"^functional_conv:F\.conv2d .*\+",
    "F.conv_transpose2d": r"^functional_conv:F\.conv_transpose2d",
    "add tensor-tensor": r"^binary:(a \+ b|torch\.add\(a, b\))",
    "mul tensor-tensor": r"^binary:(a \* b|torch\.mul\(a, b\))",
    "add/mul tensor-scalar": r"^binary:(a \+ 1\.0|torch\.add\(a, 0\.5\)|a \* 2\.0|torch\.mul\(a, -0\.5\)|1\.0 \+ a)",
    "binary + relu": r"^binary:.*\+(nn\.ReLU|F\.relu|torch\.relu|\.relu\(\))$",
    "matmul": r"^matmul:",
    "matmul + relu": r"^matmul:.*\+",
    "relu": r"^relu:",
    "hardtanh": r"^hardtanh:",
    "max pool": r"^pool:(MaxPool|F\.max_pool)",
    "avg pool": r"^pool:(AvgPool|F\.avg_pool)",
    "adaptive avg pool": r"^pool:(AdaptiveAvgPool|F\.adaptive_avg_pool)",
    "flatten": r"^flatten:",
    "mean": r"^mean:",
    "clamp": r"^clamp:",
    "reshape/view": r"^(shape|flatten|unflatten):.*(reshape|view)",
    "permute": r"^shape:\.permute",
    "transpose": r"^shape:.*transpose",
    "squeeze": r"^squeeze:",
    "unsqueeze": r"^unsqueeze:",
    "contiguous": r"^contiguous:",
    "size()/shape reads": r"(size\(0\)|shape\[)",
    "sigmoid": r"^fixed_qparams:.*[sS]igmoid",
    "tanh": r"^fixed_qparams:.*[tT]anh",
    "hardsigmoid": r"^fixed_qparams:.*[hH]ardsigmoid",
    "hardswish": r"^default_op:.*[hH]ardswish",
    "elu": r"^default_op:.*(elu|ELU)",
    "leaky_relu": r"^default_op:.*(leaky_relu|LeakyReLU)",
    "layer_norm": r"^norm:.*(LayerNorm|layer_norm)",
    "instance_norm": r"^norm:.*(InstanceNorm|instance_norm)",
    "standalone BatchNorm": r"^norm:nn\.BatchNorm",
    "dropout": r"^dropout:",
    "cat": r"^cat:",
    "LSTM": r"^rnn:nn\.LSTM",
    "GRU": r"^rnn:nn\.GRU",
    "LSTMCell": r"^rnn_cell:nn\.LSTMCell",
    "GRUCell": r"^rnn_cell:nn\.GRUCell",
    "RNNCell": r"^rnn_cell:nn\.RNNCell",
    "Embedding": r"^embedding:nn\.Embedding$",
    "EmbeddingBag": r"^embedding:nn\.EmbeddingBag",
}
DRAWS = 1000


def test_every_block_kind_and_pattern_family_is_reachable() -> None:
    tags: collections.Counter[str] = collections.Counter()
    shapes = set()
    for seed in range(DRAWS):
        spec = random_model_spec(random.Random(seed))
        tags.update(block_tags(spec))
        shapes.update(value.rank for value in spec.inputs if not value.index)
        for block in spec.blocks:  # size reads live in the statements
            if re.search(r"\.(size\(0\)|shape\[)", " ".join(block.body)):
                tags[f"{block.kind}:size(0)/shape["] += 1
    assert set(BLOCK_KINDS) <= set(tags)
    missing = [family for family, pattern in FAMILIES.items() if not any(re.search(pattern, tag) for tag in tags)]
    assert missing == []
    assert tags["scoped"] > 0
    assert shapes == {1, 2, 3, 4}


def test_every_recipe_feature_is_reachable() -> None:
    model = GeneratedModel.build(random_model_spec(random.Random(3)))
    tags: collections.Counter[str] = collections.Counter()
    for seed in range(DRAWS):
        tags.update(random_recipe(random.Random(seed), model, onednn_fusions=True).tags())
    expected = {*RECIPE_KINDS, "per_channel", "per_tensor", "embeddings_weight_only", "none_modules"}
    expected |= {f"backend={backend}" for backend in ("fbgemm", "x86", "qnnpack", "onednn")}
    expected.add("onednn_backend_config")
    assert expected <= set(tags)
    default = collections.Counter()
    for seed in range(DRAWS):
        default.update(random_recipe(random.Random(seed), model).tags())
    assert "onednn_backend_config" not in default


def test_every_block_kind_builds_under_every_recipe_kind() -> None:
    """One small example per (kind, recipe kind): no combination is always invalid."""
    failures = []
    for number, kind in enumerate(BLOCK_KINDS):
        for offset, recipe_kind in enumerate(RECIPE_KINDS):
            rng = random.Random(1000 * number + offset)
            model = GeneratedModel.build(random_model_spec(rng, max_blocks=2, kinds=[kind]))
            recipe = random_recipe(rng, model)
            while recipe.kind != recipe_kind:
                recipe = random_recipe(rng, model)
            try:
                example = build_example(model, recipe, data_seed=number)
                run(example.reference.module, example.inputs_for_checking)
            except Exception as error:  # collect them all for one readable failure
                failures.append(f"{kind} / {recipe.source()}\n{model.source()}\n{type(error).__name__}: {error}")
    assert failures == [], "\n\n".join(failures)


def test_shrinking_reaches_few_simple_blocks() -> None:
    """A failing condition shrinks to the simplest kinds and variants, flat, and few blocks."""
    spec = find(model_specs(4, ("relu", "contiguous", "conv")), lambda spec: any(b.kind == "conv" for b in spec.blocks))
    assert [(b.kind, b.variant) for b in spec.blocks if b.kind == "conv"] == [("conv", "nn.Conv2d")]
    assert not any(block.scoped for block in spec.blocks)
    assert spec.blocks[-1].kind == "conv"  # blocks after the interesting one are gone
    two = find(model_specs(4), lambda spec: len(spec.outputs) >= 2)
    assert len(two.blocks) == 2
    assert not any(block.scoped for block in two.blocks)


# --------------------------------------------------------------------------- nested scopes

NESTING_DRAWS = 200


@functools.cache
def nested_specs() -> list[Any]:
    return [random_model_spec(random.Random(seed)) for seed in range(NESTING_DRAWS)]


def test_scoped_blocks_nest_one_two_and_three_levels_deep() -> None:
    """Over 200 draws: blocks at every depth, functional linear/conv two and three levels
    deep, numbered (`layer1.0`) and named (`stage2.unit1`) parts, and RegNet's hyphenated
    `block1-0`; every part a name torch accepts and real models use (an identifier,
    digits, or `block<g>-<n>`), every path a Block<i>."""
    depths: collections.Counter[int] = collections.Counter()
    functional: collections.Counter[tuple[str, int]] = collections.Counter()
    parts = set()
    for spec in nested_specs():
        model = GeneratedModel.build(spec)
        modules = dict(model.named_modules())
        for block in spec.blocks:
            depth = len(block.path)
            depths[depth] += 1
            if block.kind in ("functional_linear", "functional_conv"):
                functional[(block.kind, depth)] += 1
            if block.scoped:
                assert type(modules[block.scope]).__name__ == f"Block{block.index}"
                assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|block[0-9]+-[0-9]+", part) for part in block.path), block.path
                parts.update(block.path)
            else:
                assert f"b{block.index}" not in modules
    assert min(depths[depth] for depth in (0, 1, 2, 3)) >= 0.1 * sum(depths.values()), depths
    assert all(functional[(kind, depth)] > 0 for kind in ("functional_linear", "functional_conv") for depth in (2, 3)), functional
    assert any(part.isdigit() for part in parts) and any(not part.isdigit() for part in parts)
    assert any("-" in part for part in parts)  # a name that is no identifier reaches the lowering


def test_containers_are_shared_and_numbered_in_order() -> None:
    """Blocks of a stage share its container (`layer1.0`, `layer1.1`); numbered children
    are 0, 1, ... with no gap; a container name (digits aside) has one type."""
    shared = 0
    types: dict[str, set[str]] = collections.defaultdict(set)
    for spec in nested_specs():
        modules = dict(GeneratedModel.build(spec).named_modules())
        containers = set()
        for block in spec.blocks:
            for depth, constructor in enumerate(block.containers, 1):
                path = ".".join(block.path[:depth])
                assert f"nn.{type(modules[path]).__name__}" == constructor
                types[re.sub(r"[0-9]+", "#", path)].add(constructor)
                containers.add(path)
        for path in containers:
            children = list(modules[path]._modules)
            if children[0].isdigit():
                assert children == [str(k) for k in range(len(children))], path
            shared += len(children) > 1
    assert shared > 0
    assert all(len(constructors) == 1 for constructors in types.values()), types


def first_spec(kind: str, depth: int) -> Any:
    return next(spec for spec in nested_specs() if any(b.kind == kind and len(b.path) == depth for b in spec.blocks))


def test_nested_functional_models_prepare_convert_and_rebuild_from_source() -> None:
    """F.linear / F.conv two and three levels deep: the source rebuilds the model,
    prepare_fx/convert_fx scope the op at the block's full path, and the example's repr
    rebuilds the same reference model, under a static and a dynamic recipe."""
    for kind in ("functional_linear", "functional_conv"):
        for depth in (2, 3):
            spec = first_spec(kind, depth)
            model = GeneratedModel.build(spec)
            namespace: dict[str, Any] = {}
            with torch.random.fork_rng(devices=[]):
                exec(compile(model.source(), "<model source>", "exec"), namespace)
            rebuilt = namespace["model"]
            assert module_types(rebuilt) == module_types(model)
            assert state_dict_differences(model, rebuilt) == []
            assert graph_differences(torch.fx.symbolic_trace(model), torch.fx.symbolic_trace(rebuilt)) == []
            block = next(b for b in spec.blocks if b.kind == kind and len(b.path) == depth)
            for recipe in (Recipe("static_int8", "fbgemm"), Recipe("dynamic_int8")):
                example = build_example(model, recipe, data_seed=depth)
                assert block.scope in {path for path, _ in example.reference.node_name_to_scope.values()}
                again: dict[str, Any] = {}
                threads = torch.get_num_threads()
                try:
                    with torch.random.fork_rng(devices=[]):
                        exec(compile(repr(example), "<example repr>", "exec"), again)
                finally:
                    torch.set_num_threads(threads)
                assert graph_differences(example.reference.module, again["reference"].module) == []
                assert state_dict_differences(example.reference.module, again["reference"].module) == []


def test_none_qconfigs_switch_nested_blocks_off_by_their_full_path() -> None:
    """Recipes name nested scopes by full dotted path; `set_module_name(path, None)` with
    the block's path or its outermost container's leaves the block's F.linear float."""
    deep = 0
    for seed in range(NESTING_DRAWS):
        rng = random.Random(seed)
        model = GeneratedModel.build(random_model_spec(rng))
        recipe = random_recipe(rng, model)
        assert set(recipe.none_modules) <= set(model.module_names())
        deep += bool({b.scope for b in model.spec.blocks if len(b.path) >= 2} & set(recipe.none_modules))
    assert deep > 0
    spec = first_spec("functional_linear", 3)
    model = GeneratedModel.build(spec)
    block = next(b for b in spec.blocks if b.kind == "functional_linear" and len(b.path) == 3)
    for off in ((), (block.scope,), (block.path[0],)):
        recipe = Recipe("static_int8", "fbgemm", none_modules=off)
        assert all(f".set_module_name({name!r}, None)" in recipe.source() for name in off)
        reference = build_example(model, recipe, data_seed=0).reference
        scope = reference.node_name_to_scope
        (linear,) = [
            n for n in reference.module.graph.nodes
            if n.target is torch.nn.functional.linear and scope.get(n.name, ("",))[0] == block.scope
        ]
        weight = linear.kwargs.get("weight", linear.args[1] if len(linear.args) > 1 else None)
        assert (weight.op == "get_attr") == bool(off), (off, weight.format_node())  # float, or dequantized
