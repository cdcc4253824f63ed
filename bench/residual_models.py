"""Generators of big quantized *reference* models for benchmarks.

A reference model is what ``prepare_fx`` -> calibrate -> ``convert_to_reference_fx``
produces.  The generator here builds a deep residual network of ResNet-style basic
blocks with tiny tensors (8 channels, 1x8x8x8 input), so graph size dominates and
tensor work is negligible.

Besides the reference ``GraphModule`` we also want the two maps that
``lower_to_fbgemm`` receives (``node_name_to_qconfig`` and ``node_name_to_scope``).
``convert_fx`` computes them internally and passes them straight into
``torch.ao.quantization.fx.convert.lower_to_fbgemm``; we temporarily replace that
function with an interceptor that records its arguments and aborts the conversion,
then apply the same clean-up ``convert`` does for reference models.  The resulting
graph is identical to ``convert_to_reference_fx``'s (checked by ``--check``).

Each block contributes 16 FX nodes (plus 6 fixed ones), see ``NODES_PER_BLOCK``.

Build cost, and what is done about it:

* prepare_fx is quadratic in model depth (a full module-tree walk per observed
  node, and a linear probe for each new observer's attribute name).  By default
  ``_fast_prepare`` patches those two spots for the duration of the build; the
  result is identical (``--check``), and 50k nodes prepare in ~2 min instead of
  ~16 min (busy 2-core machine).  ``fast=False`` / ``--unpatched`` builds with stock torch.
* fbgemm's default activation observer (HistogramObserver) makes convert spend
  ~20 ms per observer; by default the global activation observer is MinMaxObserver
  (same graph; see ``qconfig_mapping``).  ``observer="histogram"`` keeps the default.
* Builds over ``CACHE_THRESHOLD_S`` are cached in bench/.cache/ in a format of our
  own (see "cache format" below; torch.save of a GraphModule loads too slowly).

Run ``python bench/residual_models.py --sizes 1000,10000,50000`` to print build timings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import pickle
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

__all__ = [
    "NODES_PER_BLOCK",
    "FIXED_NODES",
    "BuildResult",
    "build_residual_reference_model",
    "residual_reference_model",
]

# Measured: a block (conv-bn-relu, conv-bn, add, relu) lowers to 16 reference-model
# nodes; input placeholder/quantize/dequantize + output add 6 more.
NODES_PER_BLOCK = 16
FIXED_NODES = 6

CHANNELS = 8
INPUT_SHAPE = (1, CHANNELS, 8, 8)

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
# Only cache models whose build took longer than this many seconds.
CACHE_THRESHOLD_S = 30.0
_CACHE_VERSION = 3

# prepare_fx/convert_fx recurse through module trees and graphs; deep models can
# need more than Python's default 1000 frames (e.g. deepcopy of long arg chains).
_RECURSION_LIMIT = 100_000


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + x)."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + x)


def blocks_for(target_nodes: int) -> int:
    """Number of blocks whose reference model has about ``target_nodes`` nodes."""
    return max(1, round((target_nodes - FIXED_NODES) / NODES_PER_BLOCK))


def float_model(num_blocks: int, channels: int = CHANNELS, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(*[BasicBlock(channels) for _ in range(num_blocks)])
    return model.eval()


@dataclass
class BuildResult:
    gm: GraphModule
    qconfig_map: dict[str, Any]
    node_name_to_scope: dict[str, tuple[str, type]]
    example_inputs: tuple[torch.Tensor, ...]
    num_blocks: int
    # Seconds per phase: "prepare", "calibrate", "convert" (or "load" from cache).
    timings: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def num_nodes(self) -> int:
        return len(self.gm.graph.nodes)

    def as_tuple(
        self,
    ) -> tuple[GraphModule, dict[str, Any], dict[str, tuple[str, type]], tuple[torch.Tensor, ...]]:
        return self.gm, self.qconfig_map, self.node_name_to_scope, self.example_inputs


class _Captured(Exception):
    """Raised by the lower_to_fbgemm interceptor to abort convert_fx."""

    def __init__(self, model: GraphModule, qconfig_map: dict, node_name_to_scope: dict):
        super().__init__("captured")
        self.model = model
        self.qconfig_map = qconfig_map
        self.node_name_to_scope = node_name_to_scope


def _convert_module():
    # ``torch.ao.quantization.fx.convert`` as an attribute is the *function*
    # re-exported by the package; we need the submodule.
    return importlib.import_module("torch.ao.quantization.fx.convert")


@contextlib.contextmanager
def _recursion_limit(limit: int):
    old = sys.getrecursionlimit()
    if limit > old:
        sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _capture_reference(prepared: GraphModule) -> _Captured:
    """Run convert_fx on ``prepared`` up to lower_to_fbgemm and return its inputs."""
    from torch.ao.quantization.quantize import _remove_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx

    conv_mod = _convert_module()
    original = conv_mod.lower_to_fbgemm

    def interceptor(model, qconfig_map, node_name_to_scope, *args, **kwargs):
        raise _Captured(model, qconfig_map, node_name_to_scope)

    conv_mod.lower_to_fbgemm = interceptor
    try:
        convert_fx(prepared)
    except _Captured as cap:
        captured = cap
    else:  # pragma: no cover - torch changed convert's structure
        raise RuntimeError("convert_fx did not call lower_to_fbgemm; interceptor failed")
    finally:
        conv_mod.lower_to_fbgemm = original

    # Same clean-up as the tail of torch.ao.quantization.fx.convert.convert, so the
    # model equals convert_to_reference_fx's output.
    model = captured.model
    _remove_qconfig(model)
    model.delete_all_unused_submodules()
    model.meta.pop("_observed_graph_module_attrs", None)
    return captured


def qconfig_mapping(observer: str = "minmax"):
    """fbgemm's default QConfigMapping, optionally with a cheaper activation observer.

    The fbgemm default observes activations with HistogramObserver, whose
    calculate_qparams costs ~20 ms per observer in convert (a 50k-node model has
    ~3k of them).  ``observer="minmax"`` swaps the *global* activation observer for
    ``MinMaxObserver(reduce_range=True)``: same dtypes, same quant/dequant graph,
    only the scale/zero-point values (and the observer class inside the qconfigs)
    differ.  ``observer="histogram"`` keeps the fbgemm default untouched.
    """
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver

    mapping = get_default_qconfig_mapping("fbgemm")
    if observer == "histogram":
        return mapping
    if observer != "minmax":
        raise ValueError(f"observer must be 'minmax' or 'histogram', not {observer!r}")
    default = mapping.global_qconfig
    return mapping.set_global(QConfig(activation=MinMaxObserver.with_args(reduce_range=True), weight=default.weight))


@contextlib.contextmanager
def _single_thread():
    # Tensors are tiny; extra intra-op threads only add spin/contention overhead.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _NamedModulesCache:
    """Stand-in for ``model.named_modules`` during insert_observers_for_model.

    That function calls ``dict(model.named_modules(remove_duplicate=False))`` once
    per observed node, a full module-tree walk each time: O(nodes x modules), which
    dominates prepare_fx for deep models (~16 min at 50k nodes).  Meanwhile the only
    tree change is new observers set as attributes of the root (appended to
    ``root._modules``), so this walks the tree once, afterwards only the root
    children appended since the last call, and returns the cached dict itself
    (``dict(d)`` of a dict is a fast copy).  If the root lost children it walks
    everything again; a child replaced in place would go unnoticed, which is why
    ``--check`` compares against stock prepare_fx.  Other call signatures go to the
    real method.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._real = type(model).named_modules.__get__(model)
        self._seen = -1  # len(root._modules) at the last walk
        self._entries: dict[str, nn.Module] = {}

    def __call__(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is not None or prefix or remove_duplicate:
            return self._real(memo, prefix, remove_duplicate)
        children = self._model._modules
        n = len(children)
        if n < self._seen or self._seen < 0:
            self._entries = dict(self._real(None, "", False))
        elif n > self._seen:
            new = list(itertools.islice(reversed(children.items()), n - self._seen))
            for key, child in reversed(new):
                if child is not None:
                    self._entries.update(child.named_modules(None, key, False))
        self._seen = n
        return self._entries


@contextlib.contextmanager
def _fast_prepare():
    """Patch two quadratic spots of torch's prepare_fx for the duration of a build.

    * insert_observers_for_model: see _NamedModulesCache;
    * get_new_attr_name_with_prefix("activation_post_process_") probes
      ``hasattr(model, prefix + str(i))`` from i = 0 for every new observer; the
      replacement starts probing where the previous call for the same module and
      prefix stopped (same names as long as attributes are only added).

    ``python bench/residual_models.py --check`` compares the result with an unpatched build.
    """
    prep = importlib.import_module("torch.ao.quantization.fx.prepare")
    real_insert = prep.insert_observers_for_model
    real_new_name = prep.get_new_attr_name_with_prefix
    next_index: dict[tuple[int, str], int] = {}

    def insert_observers_for_model(model, *args, **kwargs):
        model.__dict__["named_modules"] = _NamedModulesCache(model)
        try:
            return real_insert(model, *args, **kwargs)
        finally:
            model.__dict__.pop("named_modules", None)

    def get_new_attr_name_with_prefix(prefix: str):
        prefix = prefix.replace(".", "_")

        def get_new_attr_name(module: nn.Module) -> str:
            key = (id(module), prefix)
            i = next_index.get(key, 0)
            while hasattr(module, prefix + str(i)):
                i += 1
            next_index[key] = i
            return prefix + str(i)

        return get_new_attr_name

    prep.insert_observers_for_model = insert_observers_for_model
    prep.get_new_attr_name_with_prefix = get_new_attr_name_with_prefix
    try:
        yield
    finally:
        prep.insert_observers_for_model = real_insert
        prep.get_new_attr_name_with_prefix = real_new_name


def _build(
    num_blocks: int, channels: int, capture_maps: bool, observer: str = "minmax", fast: bool = True
) -> BuildResult:
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    example_inputs = (torch.randn(1, channels, *INPUT_SHAPE[2:], generator=torch.Generator().manual_seed(0)),)
    model = float_model(num_blocks, channels)
    timings: dict[str, float] = {}
    with _recursion_limit(_RECURSION_LIMIT), _single_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        with _fast_prepare() if fast else contextlib.nullcontext():
            prepared = prepare_fx(model, qconfig_mapping(observer), example_inputs)
        t1 = time.perf_counter()
        with torch.no_grad():
            prepared(*example_inputs)
        t2 = time.perf_counter()
        if capture_maps:
            cap = _capture_reference(prepared)
            gm, qconfig_map, scope = cap.model, dict(cap.qconfig_map), dict(cap.node_name_to_scope)
        else:
            gm, qconfig_map, scope = convert_to_reference_fx(prepared), {}, {}
        t3 = time.perf_counter()
    timings.update(prepare=t1 - t0, calibrate=t2 - t1, convert=t3 - t2)
    return BuildResult(gm, qconfig_map, scope, example_inputs, num_blocks, timings)


def _cache_path(num_blocks: int, channels: int, capture_maps: bool, observer: str) -> Path:
    tag = "maps" if capture_maps else "nomaps"
    return CACHE_DIR / (
        f"residual_b{num_blocks}_c{channels}_{observer}_{tag}_torch{torch.__version__}_v{_CACHE_VERSION}.pt"
    )


# --- cache format -----------------------------------------------------------------------
#
# torch.save(gm) works but is useless here: unpickling a GraphModule re-traces its
# generated code, and Tracer.create_arg scans every buffer for each tensor argument,
# so loading 50k nodes takes ~3 min (longer than building), and node.meta is lost.
# Instead we pickle the root's submodules/buffers plus one record per node and
# rebuild with torch.fx.Graph.create_node + GraphModule(root, graph): exact names,
# targets, args and meta, one recompile.  torch.save/torch.load do the tensors (plain
# pickle of 50k small tensors is slow); our Pickler/Unpickler, which they subclass,
# handle fx.Node references, classes of this module (pickled as ``__main__.X`` when
# run as a script), and the device closure prepare_fx puts into observer constructors
# (replaced by the module-level equivalent ``_device_factory_kwargs``).


def _device_factory_kwargs() -> dict[str, torch.device]:
    # Stand-in for the closure of _add_module_to_qconfig_obs_ctr; bench models are on CPU.
    return {"device": torch.device("cpu")}


def _is_device_closure(fn: Any) -> bool:
    return getattr(fn, "__qualname__", "").endswith("get_factory_kwargs_based_on_module_device")


class _NodeRef:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self):
        return (_NodeRef, (self.name,))


def _restore_device_ctr(stripped: Any) -> Any:
    return stripped.with_callable_args(factory_kwargs=_device_factory_kwargs)


# Names this module may appear under in a cache file (run as a script it is __main__).
_CACHE_GLOBALS = frozenset({"BasicBlock", "_NodeRef", "_restore_device_ctr", "_device_factory_kwargs"})
_THIS_MODULE_NAMES = frozenset({__name__, "__main__", "residual_models", "bench.residual_models", "models", "bench.models"})


class _Pickler(pickle.Pickler):
    """torch.save subclasses this (adding its tensor persistent_id); we add reducers."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.fx.Node):
            return (_NodeRef, (obj.name,))
        if type(obj).__name__ == "_PartialWrapper" and _is_device_closure(
            getattr(obj, "callable_args", {}).get("factory_kwargs")
        ):
            stripped = type(obj)(obj.p)
            stripped.callable_args = {k: v for k, v in obj.callable_args.items() if k != "factory_kwargs"}
            return (_restore_device_ctr, (stripped,))
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _THIS_MODULE_NAMES and name in _CACHE_GLOBALS:
            return getattr(sys.modules[__name__], name)
        return super().find_class(module, name)


_pickle_module = types.ModuleType("fqlower_bench_pickle")
_pickle_module.Pickler = _Pickler  # type: ignore[attr-defined]
_pickle_module.Unpickler = _Unpickler  # type: ignore[attr-defined]
_pickle_module.load = pickle.load  # type: ignore[attr-defined]
_pickle_module.dump = pickle.dump  # type: ignore[attr-defined]


def _gm_state(gm: GraphModule) -> dict[str, Any]:
    root = nn.Module()
    root._modules = dict(gm._modules)
    root._parameters = dict(gm._parameters)
    root._buffers = dict(gm._buffers)
    root._non_persistent_buffers_set = set(gm._non_persistent_buffers_set)
    graph = gm.graph
    records = [(n.op, n.target, n.args, n.kwargs, n.name, n.type, n.meta) for n in graph.nodes]
    return dict(
        root=root,
        records=records,
        codegen=graph._codegen,
        tracer_cls=graph._tracer_cls,
        tracer_extras=graph._tracer_extras,
        class_name=type(gm).__name__,
        training=gm.training,
        meta=dict(gm.meta),
    )


def _gm_from_state(state: dict[str, Any]) -> GraphModule:
    graph = torch.fx.Graph(tracer_cls=state["tracer_cls"], tracer_extras=state["tracer_extras"])
    graph._codegen = state["codegen"]
    env: dict[str, torch.fx.Node] = {}

    def resolve(a: Any) -> Any:
        if isinstance(a, _NodeRef):
            return env[a.name]
        if isinstance(a, (tuple, list)):
            items = [resolve(x) for x in a]
            return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
        if isinstance(a, dict):
            return type(a)((k, resolve(v)) for k, v in a.items())
        if isinstance(a, slice):
            return slice(resolve(a.start), resolve(a.stop), resolve(a.step))
        return a

    for op, target, args, kwargs, name, type_expr, meta in state["records"]:
        node = graph.create_node(op, target, resolve(args), resolve(kwargs), name=name, type_expr=type_expr)
        if node.name != name:
            raise ValueError(f"node {name!r} came back as {node.name!r}")
        node.meta = resolve(meta)
        env[name] = node
    gm = GraphModule(state["root"], graph, class_name=state["class_name"])
    gm.train(state["training"])
    gm.meta = state["meta"]
    return gm


def _try_load(path: Path) -> BuildResult | None:
    if not path.exists():
        return None
    t0 = time.perf_counter()
    try:
        with _recursion_limit(_RECURSION_LIMIT), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, pickle_module=_pickle_module, weights_only=False)
            data["gm"] = _gm_from_state(data.pop("gm_state"))
        res = BuildResult(**data)
    except Exception as exc:  # stale/corrupt cache: rebuild
        print(f"[bench.models] ignoring unreadable cache {path.name}: {exc!r}", file=sys.stderr)
        return None
    res.timings = {"load": time.perf_counter() - t0}
    res.from_cache = True
    return res


def _try_save(path: Path, res: BuildResult) -> None:
    data = dict(
        gm_state=_gm_state(res.gm),
        qconfig_map=res.qconfig_map,
        node_name_to_scope=res.node_name_to_scope,
        example_inputs=res.example_inputs,
        num_blocks=res.num_blocks,
    )
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _recursion_limit(_RECURSION_LIMIT):
            torch.save(data, tmp, pickle_module=_pickle_module)
        os.replace(tmp, path)
    except Exception as exc:  # something unpicklable: just rebuild next time
        print(f"[bench.models] not caching {path.name}: {exc!r}", file=sys.stderr)
        with contextlib.suppress(OSError):
            tmp.unlink()


def build_residual_reference_model(
    target_nodes: int,
    *,
    channels: int = CHANNELS,
    capture_maps: bool = True,
    use_cache: bool = True,
    observer: str = "minmax",
    fast: bool = True,
) -> BuildResult:
    """Build (or load from bench/.cache/) a reference model of ~``target_nodes`` nodes.

    With ``capture_maps`` the qconfig map and node_name_to_scope are captured from
    convert_fx; otherwise ``convert_to_reference_fx`` is used and both maps are empty.
    Models whose build takes longer than ``CACHE_THRESHOLD_S`` are cached on disk
    when ``use_cache`` (disable with env FQLOWER_BENCH_NO_CACHE=1).  ``observer``:
    see ``qconfig_mapping``.
    """
    num_blocks = blocks_for(target_nodes)
    use_cache = use_cache and not os.environ.get("FQLOWER_BENCH_NO_CACHE")
    path = _cache_path(num_blocks, channels, capture_maps, observer)
    if use_cache:
        cached = _try_load(path)
        if cached is not None:
            return cached
    res = _build(num_blocks, channels, capture_maps, observer, fast)
    if use_cache and sum(res.timings.values()) > CACHE_THRESHOLD_S:
        _try_save(path, res)
    return res


def residual_reference_model(
    target_nodes: int,
) -> tuple[GraphModule, dict[str, Any], dict[str, tuple[str, type]], tuple[torch.Tensor, ...]]:
    """Return ``(gm, qconfig_map, node_name_to_scope, example_inputs)`` of ~target_nodes nodes."""
    return build_residual_reference_model(target_nodes).as_tuple()


def _same_model(a: BuildResult, b: BuildResult, what: str) -> None:
    assert a.gm.code == b.gm.code, f"{what}: graphs differ"
    mods = lambda r: [(k, type(m).__name__) for k, m in r.gm.named_modules()]  # noqa: E731
    assert mods(a) == mods(b), f"{what}: modules differ"
    sa, sb = a.gm.state_dict(), b.gm.state_dict()
    assert list(sa) == list(sb), f"{what}: state_dict keys differ"
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            torch.testing.assert_close(sa[k], sb[k], msg=f"{what}: {k} differs")
        else:
            assert sa[k] == sb[k], f"{what}: {k} differs"
    x = a.example_inputs
    torch.testing.assert_close(a.gm(*x), b.gm(*x), msg=f"{what}: outputs differ")


def _check(num_blocks: int = 40) -> None:
    """Captured == convert_to_reference_fx, and patched prepare == stock prepare."""
    a = _build(num_blocks, CHANNELS, capture_maps=True)
    b = _build(num_blocks, CHANNELS, capture_maps=False)
    _same_model(a, b, "capture vs convert_to_reference_fx")
    c = _build(num_blocks, CHANNELS, capture_maps=True, fast=False)
    _same_model(a, c, "fast vs stock prepare")
    assert list(a.qconfig_map) == list(c.qconfig_map), "fast vs stock prepare: qconfig map keys differ"
    assert a.node_name_to_scope == c.node_name_to_scope, "fast vs stock prepare: scope maps differ"
    names = {n.name for n in a.gm.graph.nodes}
    print(
        f"check ok: {len(names)} nodes, {len(a.qconfig_map)} qconfig entries "
        f"({len(names & set(a.qconfig_map))} match graph nodes), "
        f"{len(a.node_name_to_scope)} scope entries "
        f"({len(names & set(a.node_name_to_scope))} match graph nodes)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,50000")
    p.add_argument("--no-maps", action="store_true", help="use convert_to_reference_fx, empty maps")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--check", action="store_true", help="verify capture == convert_to_reference_fx")
    p.add_argument("--observer", choices=("minmax", "histogram"), default="minmax")
    p.add_argument("--unpatched", action="store_true", help="stock prepare_fx (quadratic; slow)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
    warnings.filterwarnings("ignore", module=r"torch\..*")
    if args.check:
        _check()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"{'target':>8} {'blocks':>7} {'nodes':>7} {'prepare s':>10} {'calib s':>8} {'convert s':>10} {'load s':>7}")
    for n in sizes:
        r = build_residual_reference_model(
            n,
            capture_maps=not args.no_maps,
            use_cache=not args.no_cache,
            observer=args.observer,
            fast=not args.unpatched,
        )
        t = r.timings
        f = lambda k: f"{t[k]:.2f}" if k in t else "-"  # noqa: E731
        print(
            f"{n:>8} {r.num_blocks:>7} {r.num_nodes:>7} {f('prepare'):>10} {f('calibrate'):>8} "
            f"{f('convert'):>10} {f('load'):>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
