"""PT2E conv and linear chains become onednn int8 kernels (what torchao's x86 lowering emits).

    %q   = quantized_decomposed.quantize_per_tensor(%x, xs, xz, 0, 255, uint8)
    %dq  = quantized_decomposed.dequantize_per_tensor(%q, xs, xz, 0, 255, uint8)
    %w   = quantized_decomposed.dequantize_per_channel(<int8 weight>, <ws>, <wz>, 0, -128, 127, int8)
    %y   = aten.conv2d(%dq, %w, <bias>, stride, padding, dilation, groups)     (or aten.linear)
    %a   = aten.relu(%y)                                                       (optional post-op)
    %out = quantized_decomposed.quantize_per_tensor(%a, os, oz, 0, 255, uint8)  (optional)
        becomes
    %packed = onednn.qconv_prepack(<int8 weight>, <ws>, xs, xz, stride, padding, dilation, groups, x_shape)
    %out    = onednn.qconv_pointwise(%q, xs, xz, %packed, <ws>, <wz>, <bias>, stride, padding,
                                     dilation, groups, os, oz, uint8, "relu", [], "")

(for a linear: onednn.qlinear_prepack(<int8 weight>, x_shape) and onednn.qlinear_pointwise).
A 2-d conv whose only user adds a dequantized residual (then maybe a relu) becomes
onednn's binary conv, as torchao's lowering makes it: the sum accumulates into that
dequantized tensor, the output is float32 and the quantize after it stays:

    %y = aten.conv2d(%dq, %w, ...);  %s = aten.add(%y, %dq_other);  %r = aten.relu(%s)
        becomes
    %r = onednn.qconv2d_pointwise.binary(%q, xs, xz, %packed, <ws>, <wz>, %dq_other, <bias>, ...,
                                         1.0, 0, float32, 1.0, 0, "sum", 1.0, "relu", [], "")

Without the final quantize the kernel writes float32 (output scale 1.0, zero point 0), as
torchao's does. Weight folding (fqlower.passes.fold_weights) then packs the weight once
into an attribute. A linear on an input of more than two dimensions (a token sequence)
is lowered too: onednn's kernel takes it, torchao's lowering leaves it float.
"""

from __future__ import annotations

from typing import Any

import torch

from fqlower.engine.edits import AddNode, Edit, RemoveNode, ReplaceUses
from fqlower.engine.pipeline import Match, Miss, Rule, RulePass
from fqlower.ir import FrozenDict, ListArg, Node, ProgramView, Ref
from fqlower.passes.common import bindings, fresh_name
from fqlower.pt2e.patterns import (
    SHAPE,
    activation_qparams,
    conv_arguments,
    is_dequantize_per_channel,
    is_quantize_uint8,
    sole_user,
    static_shape,
)

aten = torch.ops.aten
CONVS = (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default)
LINEARS = (aten.linear.default,)

# aten post-op -> (onednn attr, its scalars from the node's args, algorithm)
POST_OPS: dict[Any, tuple[str, Any, str]] = {
    aten.relu.default: ("relu", lambda node: [], ""),
    aten.relu_.default: ("relu", lambda node: [], ""),
    aten.hardtanh.default: ("hardtanh", lambda node: _hardtanh_bounds(node), ""),
    aten.hardtanh_.default: ("hardtanh", lambda node: _hardtanh_bounds(node), ""),
    aten.hardswish.default: ("hardswish", lambda node: [], ""),
    aten.hardswish_.default: ("hardswish", lambda node: [], ""),
    aten.silu.default: ("swish", lambda node: [], ""),
    aten.silu_.default: ("swish", lambda node: [], ""),
    aten.gelu.default: ("gelu", lambda node: [], "none"),
}


def _hardtanh_bounds(node: Node) -> list[float]:
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return [float(low), float(high)]


# the post-ops onednn's kernels fuse (its qconv has no gelu; its qlinear no hardswish or swish)
CONV_POST_OPS = frozenset({"relu", "hardtanh", "hardswish", "swish"})
LINEAR_POST_OPS = frozenset({"relu", "gelu", "hardtanh"})


def candidate(node: Node) -> bool:
    return node.op == "call_function" and (node.target in CONVS or node.target in LINEARS)


def match(program: ProgramView, node: Node) -> Match | Miss | None:
    if not candidate(node) or len(node.args) < 2:
        return None
    dq_x, dq_w = (program.node(arg.name) if isinstance(arg, Ref) else None for arg in node.args[:2])
    if dq_w is None or not is_dequantize_per_channel(dq_w):
        return None  # a float conv or linear, or one whose weight is not quantized per channel
    x_qparams = activation_qparams(program, dq_x)
    if isinstance(x_qparams, Miss):
        return x_qparams
    weight = program.node(dq_w.args[0].name) if isinstance(dq_w.args[0], Ref) else None
    if weight is None or weight.op != "get_attr" or dq_w.args[3] != 0 or any(not isinstance(arg, Ref) for arg in dq_w.args[1:3]):
        return Miss(f"{node.name!r}: its weight is not a constant int8 tensor quantized along dimension 0")
    conv = conv_arguments(node) if node.target in CONVS else None
    if node.target in CONVS and conv is None:
        return Miss(f"{node.name!r}: its stride, padding, dilation or groups are not constants")
    tail = node.name
    post = sole_user(program, node.name)
    facts: dict[str, Any] = {"attr": "none", "scalars": (), "algorithm": ""}
    if conv is not None:
        facts.update(stride=tuple(conv[0]), padding=tuple(conv[1]), dilation=tuple(conv[2]), groups=conv[3])
    fusable = LINEAR_POST_OPS if node.target in LINEARS else CONV_POST_OPS
    if post is not None and post.op == "call_function" and post.target in POST_OPS and POST_OPS[post.target][0] in fusable and post.args[0] == Ref(node.name):
        attr, scalars, algorithm = POST_OPS[post.target]
        facts.update(attr=attr, scalars=tuple(scalars(post)), algorithm=_gelu_algorithm(post) if attr == "gelu" else algorithm)
        tail = post.name
    accum = _residual(program, node, post) if node.target == aten.conv2d.default and tail == node.name else None
    if accum is not None:  # conv + add (+ relu): onednn's binary conv, float out, as torchao's
        add, accum_name = accum
        after_add = sole_user(program, add.name)
        unary = after_add is not None and after_add.op == "call_function" and after_add.target in (aten.relu.default, aten.relu_.default)
        facts.update(binary=accum_name, unary="relu" if unary else "none")
        last = after_add.name if unary and after_add is not None else add.name
        roles = bindings(dq_x=dq_x.name if dq_x is not None else None, dq_w=dq_w.name, op=node.name, add=add.name, post=last if last != add.name else None)
        return Match(node.name, roles, FrozenDict(facts))
    quantize = sole_user(program, tail)
    output = quantize.name if quantize is not None and is_quantize_uint8(quantize) and quantize.args[0] == Ref(tail) else None
    roles = bindings(dq_x=dq_x.name if dq_x is not None else None, dq_w=dq_w.name, op=node.name, post=tail if tail != node.name else None, output=output)
    return Match(node.name, roles, FrozenDict(facts))


def input_shape(program: ProgramView, dq: Node) -> list[int] | None:
    """The static shape of the activation a dequantize gives back: from its own export
    metadata, else from the float value its quantize read (convert_pt2e's q/dq nodes
    carry none). The prepack takes it as a hint, as torchao's lowering gives it."""
    node: Node | None = dq
    for _ in range(3):  # dequantize <- quantize <- the float value
        if node is None:
            return None
        shape = static_shape(node)
        if shape is not None:
            return shape
        node = program.node(node.args[0].name) if node.args and isinstance(node.args[0], Ref) else None
    return None


def _shape_meta(replaced: Node, op: Node) -> FrozenDict:
    """The shape of the value a kernel replaces, for the prepacks of the kernels that read
    it: the replaced node's, or the op's (a post-op and a quantize keep its shape;
    convert_pt2e's quantize nodes carry no export metadata). Kept under fqlower's own key:
    export's `val` would also claim a dtype, and the kernel writes uint8."""
    shape = static_shape(replaced) or static_shape(op)
    return FrozenDict({SHAPE: tuple(shape)}) if shape is not None else FrozenDict()


def _residual(program: ProgramView, conv: Node, user: Node | None) -> tuple[Node, str] | None:
    """(the add, the dequantize it adds) where `conv`'s only user adds it to a uint8
    dequantize read by nothing else (onednn's sum post-op accumulates into that tensor)."""
    if user is None or user.op != "call_function" or user.target != aten.add.Tensor or len(user.args) != 2 or user.kwargs:
        return None
    others = [arg for arg in user.args if arg != Ref(conv.name)]
    if len(others) != 1 or not isinstance(others[0], Ref):
        return None
    other = program.node(others[0].name)
    if isinstance(activation_qparams(program, other), Miss) or program.users(other.name) != (user.name,):
        return None
    return user, other.name


def _gelu_algorithm(node: Node) -> str:
    approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return "tanh" if approximate == "tanh" else "none"


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    op = program.node(roles["op"])
    dq_x, dq_w = program.node(roles["dq_x"]), program.node(roles["dq_w"])
    q_x, x_scale, x_zero_point = dq_x.args[0], float(dq_x.args[1]), int(dq_x.args[2])
    w, w_scales, w_zero_points = dq_w.args[0], dq_w.args[1], dq_w.args[2]
    bias = op.args[2] if len(op.args) > 2 else op.kwargs.get("bias")
    shape = input_shape(program, dq_x)
    x_shape = ListArg(tuple(shape)) if shape is not None else None
    output = roles.get("output")
    if output is not None:
        quantize = program.node(output)
        out_scale, out_zero_point, out_dtype = float(quantize.args[1]), int(quantize.args[2]), torch.uint8
    else:
        out_scale, out_zero_point, out_dtype = 1.0, 0, torch.float32
    facts = found.facts
    post_args = ListArg(tuple(facts["scalars"]))
    taken = set()
    packed_name = fresh_name(program, f"{op.name}_weight_prepack")
    taken.add(packed_name)
    kernel_name = fresh_name(program, f"{op.name}_int8", taken)
    if op.target in LINEARS:
        prepack = Node(packed_name, "call_function", torch.ops.onednn.qlinear_prepack, (w, x_shape))
        kernel_args: tuple[Any, ...] = (
            q_x, x_scale, x_zero_point, Ref(packed_name), w_scales, w_zero_points, bias,
            out_scale, out_zero_point, out_dtype, facts["attr"], post_args, facts["algorithm"],
        )
        kernel_target: Any = torch.ops.onednn.qlinear_pointwise.default
    else:
        stride, padding, dilation = (ListArg(facts[key]) for key in ("stride", "padding", "dilation"))
        groups = facts["groups"]
        prepack = Node(packed_name, "call_function", torch.ops.onednn.qconv_prepack, (w, w_scales, x_scale, x_zero_point, stride, padding, dilation, groups, x_shape))
        kernel_args = (
            q_x, x_scale, x_zero_point, Ref(packed_name), w_scales, w_zero_points, bias, stride, padding, dilation, groups,
            out_scale, out_zero_point, out_dtype, facts["attr"], post_args, facts["algorithm"],
        )
        kernel_target = torch.ops.onednn.qconv_pointwise.default
    if "binary" in facts:
        kernel_target = torch.ops.onednn.qconv2d_pointwise.binary
        kernel_args = (
            *kernel_args[:6], Ref(facts["binary"]), *kernel_args[6:11],
            1.0, 0, torch.float32, 1.0, 0, "sum", 1.0, facts["unary"], ListArg(()), "",
        )
    last = output or roles.get("post") or roles.get("add") or op.name
    edits: list[Edit] = [
        AddNode(prepack, before=op.name),
        AddNode(Node(kernel_name, "call_function", kernel_target, kernel_args, meta=_shape_meta(program.node(last), op)), after=last),
        ReplaceUses(last, kernel_name),
    ]
    for name in (output, roles.get("post"), roles.get("add"), op.name):
        if name is not None:
            edits.append(RemoveNode(name))
    for name in (dq_w.name, dq_x.name):
        if all(user in (op.name,) for user in program.users(name)):
            edits.append(RemoveNode(name))
    return edits


LOWER_PT2E_WEIGHTED = RulePass("lower-pt2e-weighted", (Rule("conv-linear-pointwise", match, rewrite, candidate),))
