"""Block kinds without weights: activations, clamps, fixed-qparams and default ops,
shape ops, pooling and norms, binary ops, matmul, cat. See models.py."""

from __future__ import annotations

import math

import attrs

from gen_program import Draw, MAX_NUMEL, Value, _Builder, _any, _dims, _relu_tail


# --------------------------------------------------------------------------- block kinds
# Each draws its inputs and parameters and emits one block. Variants are listed
# simple -> complex; `{a}`/`{b}`/`{c}` are inputs, `{o}` the output.


def _k_relu(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("torch.relu", "F.relu", ".relu()", "nn.ReLU"))
    expr = {
        "torch.relu": f"torch.relu({a.name})",
        "F.relu": f"F.relu({a.name})",
        ".relu()": f"{a.name}.relu()",
        "nn.ReLU": "",
    }[form]
    if form == "nn.ReLU":
        expr = b.module("relu", "nn.ReLU()") + f"({a.name})"
    b.emit("relu", form, [f"{{o}} = {expr}"], a.shape)


def _k_contiguous(b: _Builder) -> None:
    a = _any(b)
    b.emit("contiguous", ".contiguous()", [f"{{o}} = {a.name}.contiguous()"], a.shape, True)


def _k_dropout(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("nn.Dropout", "F.dropout", "F.dropout(training=self.training)"))
    if form == "nn.Dropout":
        expr = b.module("dropout", "nn.Dropout(0.5)") + f"({a.name})"
    elif form == "F.dropout":
        expr = f"F.dropout({a.name}, 0.5, False)"
    else:
        expr = f"F.dropout({a.name}, p=0.25, training=self.training)"
    b.emit("dropout", form, [f"{{o}} = {expr}"], a.shape)


def _k_hardtanh(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("F.hardtanh", "F.hardtanh(-0.5, 0.5)", "F.relu6", "nn.Hardtanh", "nn.ReLU6"))
    expr = {
        "F.hardtanh": f"F.hardtanh({a.name})",
        "F.hardtanh(-0.5, 0.5)": f"F.hardtanh({a.name}, -0.5, 0.5)",
        "F.relu6": f"F.relu6({a.name})",
    }.get(form)
    if form == "nn.Hardtanh":
        expr = b.module("hardtanh", "nn.Hardtanh(-1.0, 1.0)") + f"({a.name})"
    elif form == "nn.ReLU6":
        expr = b.module("relu6", "nn.ReLU6()") + f"({a.name})"
    b.emit("hardtanh", form, [f"{{o}} = {expr}"], a.shape)


def _unary(b: _Builder, kind: str, forms: tuple[str, ...], functions: dict[str, str], modules: dict[str, tuple[str, str]]) -> None:
    """A block applying one of `forms` to an earlier value: a call from `functions`
    (a template of `{a}`) or a new module from `modules` (attribute name, constructor)."""
    a = _any(b)
    form = b.d.pick(forms)
    expr = b.module(*modules[form]) + f"({a.name})" if form in modules else functions[form].format(a=a.name)
    b.emit(kind, form, [f"{{o}} = {expr}"], a.shape)


def _k_clamp(b: _Builder) -> None:
    _unary(
        b,
        "clamp",
        ("torch.clamp", ".clamp(min=)", "torch.clamp(min=, max=)", ".clamp(lo, hi)"),
        {
            "torch.clamp": "torch.clamp({a}, -1.0, 1.0)",
            ".clamp(min=)": "{a}.clamp(min=0.0)",
            "torch.clamp(min=, max=)": "torch.clamp({a}, min=-0.5, max=0.5)",
            ".clamp(lo, hi)": "{a}.clamp(-2.0, 2.0)",
        },
        {},
    )


def _k_fixed_qparams(b: _Builder) -> None:
    _unary(
        b,
        "fixed_qparams",
        ("torch.sigmoid", ".sigmoid()", "nn.Sigmoid", "torch.tanh", ".tanh()", "nn.Tanh",
         "F.hardsigmoid", "nn.Hardsigmoid", "nn.Softmax"),
        {
            "torch.sigmoid": "torch.sigmoid({a})",
            ".sigmoid()": "{a}.sigmoid()",
            "torch.tanh": "torch.tanh({a})",
            ".tanh()": "{a}.tanh()",
            "F.hardsigmoid": "F.hardsigmoid({a})",
        },
        {
            "nn.Sigmoid": ("sigmoid", "nn.Sigmoid()"),
            "nn.Tanh": ("tanh", "nn.Tanh()"),
            "nn.Hardsigmoid": ("hardsigmoid", "nn.Hardsigmoid()"),
            "nn.Softmax": ("softmax", "nn.Softmax(dim=-1)"),
        },
    )


def _k_default_op(b: _Builder) -> None:
    _unary(
        b,
        "default_op",
        ("F.hardswish", "nn.Hardswish", "F.elu", "F.elu(alpha=)", "nn.ELU", "F.leaky_relu",
         "F.leaky_relu(negative_slope=)", "nn.LeakyReLU", "nn.PReLU"),
        {
            "F.hardswish": "F.hardswish({a})",
            "F.elu": "F.elu({a})",
            "F.elu(alpha=)": "F.elu({a}, alpha=0.5)",
            "F.leaky_relu": "F.leaky_relu({a}, 0.1)",
            "F.leaky_relu(negative_slope=)": "F.leaky_relu({a}, negative_slope=0.2)",
        },
        {
            "nn.Hardswish": ("hardswish", "nn.Hardswish()"),
            "nn.ELU": ("elu", "nn.ELU()"),
            "nn.LeakyReLU": ("leaky_relu", "nn.LeakyReLU(0.05)"),
            "nn.PReLU": ("prelu", "nn.PReLU()"),
        },
    )


def _k_shape(b: _Builder) -> None:
    """Rank-preserving shape ops: transpose, permute, reshape/view, squeeze(unsqueeze())."""
    a = _any(b)
    n, shape = a.name, a.shape
    forms = ["squeeze(unsqueeze)", "reshape(-1, ...)"]
    if a.contiguous:
        forms.append("view(size(0), ...)")
    if a.rank >= 2:
        forms += [".transpose", "torch.transpose", ".permute", ".transpose().contiguous()"]
    form = b.d.pick(forms)
    last = a.rank  # dims of the batched tensor: 0 .. a.rank
    contiguous = a.contiguous
    if form == "squeeze(unsqueeze)":
        body, out = [f"{{o}} = torch.squeeze(torch.unsqueeze({n}, 1), 1)"], shape
    elif form == "reshape(-1, ...)":  # same shape: reshape returns a view, layout kept
        body, out = [f"{{o}} = {n}.reshape(-1, {_dims(shape)})"], shape
    elif form == "view(size(0), ...)":
        body, out = [f"{{o}} = {n}.view({n}.size(0), {_dims(shape)})"], shape
    elif form == ".permute":
        order = list(range(1, a.rank + 1))
        order = [order[0], *reversed(order[1:])] if a.rank >= 3 and b.d.flag() else [*order[1:], order[0]]
        body = [f"{{o}} = {n}.permute(0, {_dims(order)})"]
        out, contiguous = tuple(shape[i - 1] for i in order), False
    else:
        out = (*shape[:-2], shape[-1], shape[-2])
        if form == ".transpose":
            body, contiguous = [f"{{o}} = {n}.transpose({last - 1}, {last})"], False
        elif form == "torch.transpose":
            body, contiguous = [f"{{o}} = torch.transpose({n}, {last}, {last - 1})"], False
        else:
            body, contiguous = [f"{{o}} = {n}.transpose({last - 1}, {last}).contiguous()"], True
    b.emit("shape", form, body, out, contiguous)


def _k_unsqueeze(b: _Builder) -> None:
    a = b.choose_rank((1, 2, 3))
    form = b.d.pick((".unsqueeze(1)", "torch.unsqueeze(-1)"))
    if form == ".unsqueeze(1)":
        body, out = [f"{{o}} = {a.name}.unsqueeze(1)"], (1, *a.shape)
    else:
        body, out = [f"{{o}} = torch.unsqueeze({a.name}, -1)"], (*a.shape, 1)
    b.emit("unsqueeze", form, body, out)


def _k_squeeze(b: _Builder) -> None:
    a = b.choose(lambda v: v.rank >= 2 and 1 in v.shape, (2,))
    if 1 not in a.shape:  # a fresh input: make its channel dim 1
        a = b.inputs[-1] = b.values[-1] = attrs.evolve(a, shape=(1, a.shape[1]))
    dim = a.shape.index(1) + 1
    form = b.d.pick((".squeeze(dim)", "torch.squeeze(dim)"))
    expr = f"{a.name}.squeeze({dim})" if form == ".squeeze(dim)" else f"torch.squeeze({a.name}, {dim})"
    out = a.shape[: dim - 1] + a.shape[dim:]
    b.emit("squeeze", form, [f"{{o}} = {expr}"], out)


def _k_flatten(b: _Builder) -> None:
    """To a lower rank: everything to features, or the trailing dims together."""
    a = b.choose_rank((2, 3, 4))
    n = a.name
    forms = ["torch.flatten(1)", ".flatten(1)", "reshape(size(0), -1)", "reshape(-1, n)", "flatten(2)",
             "reshape(shape[0], shape[1], -1)"]
    if a.contiguous:
        forms += ["view(shape[0], -1)", "view(-1, n)"]
    form = b.d.pick(forms)
    flat = (a.numel,)
    body, out = {
        "torch.flatten(1)": (f"torch.flatten({n}, 1)", flat),
        ".flatten(1)": (f"{n}.flatten(1)", flat),
        "reshape(size(0), -1)": (f"{n}.reshape({n}.size(0), -1)", flat),
        "reshape(-1, n)": (f"{n}.reshape(-1, {a.numel})", flat),
        "view(shape[0], -1)": (f"{n}.view({n}.shape[0], -1)", flat),
        "view(-1, n)": (f"{n}.view(-1, {a.numel})", flat),
        "flatten(2)": (f"torch.flatten({n}, 2)", (a.shape[0], a.numel // a.shape[0])),
        "reshape(shape[0], shape[1], -1)": (
            f"{n}.reshape({n}.shape[0], {n}.shape[1], -1)",
            (a.shape[0], a.numel // a.shape[0]),
        ),
    }[form]
    b.emit("flatten", form, [f"{{o}} = {body}"], out)


def _factor(n: int, d: Draw) -> tuple[int, int]:
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    nontrivial = [k for k in divisors if 1 < k < n]
    k = d.pick(nontrivial + [1, n])
    return k, n // k


def _k_unflatten(b: _Builder) -> None:
    """To a higher rank: split the last dim in two."""
    a = b.choose_rank((1, 2, 3))
    n = a.name
    first, second = _factor(a.shape[-1], b.d)
    out = (*a.shape[:-1], first, second)
    forms = ["reshape(-1, ...)", "reshape(size(0), ...)"] + (["view(size(0), ...)"] if a.contiguous else [])
    form = b.d.pick(forms)
    if form == "reshape(-1, ...)":
        expr = f"{n}.reshape(-1, {_dims(out)})"
    elif form == "reshape(size(0), ...)":
        expr = f"{n}.reshape({n}.size(0), {_dims(out)})"
    else:
        expr = f"{n}.view({n}.size(0), {_dims(out)})"
    b.emit("unflatten", form, [f"{{o}} = {expr}"], out)


def _k_mean(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    forms = [".mean(-1, keepdim=True)"]
    if a.rank >= 2:
        forms += [".mean(-1)", "torch.mean(1)"]
    if a.rank >= 3:
        forms += [".mean((2, 3))", "torch.mean(dim=[2, 3], keepdim=True)"]
    form = b.d.pick(forms)
    s = a.shape
    body, out = {
        ".mean(-1, keepdim=True)": (f"{n}.mean(-1, keepdim=True)", (*s[:-1], 1)),
        ".mean(-1)": (f"{n}.mean(-1)", s[:-1]),
        "torch.mean(1)": (f"torch.mean({n}, 1)", s[1:]),
        ".mean((2, 3))": (f"{n}.mean((2, 3))", (s[0], *s[3:])),
        "torch.mean(dim=[2, 3], keepdim=True)": (f"torch.mean({n}, dim=[2, 3], keepdim=True)", (s[0], 1, 1, *s[3:])),
    }[form]
    b.emit("mean", form, [f"{{o}} = {body}"], out, True)


def _k_pool(b: _Builder) -> None:
    a = b.choose_rank((2, 3, 4), lambda v: min(v.shape[1:]) >= 2)
    nd = a.rank - 1
    n = a.name
    half = (a.shape[0], *(s // 2 for s in a.shape[1:]))
    form = b.d.pick(("MaxPool", "F.max_pool", "AvgPool", "F.avg_pool", "AdaptiveAvgPool(1)", "F.adaptive_avg_pool(2)"))
    if form == "MaxPool":
        expr, out = b.module("pool", f"nn.MaxPool{nd}d(2)") + f"({n})", half
    elif form == "F.max_pool":
        expr, out = f"F.max_pool{nd}d({n}, 2)", half
    elif form == "AvgPool":
        expr, out = b.module("pool", f"nn.AvgPool{nd}d(2)") + f"({n})", half
    elif form == "F.avg_pool":
        expr, out = f"F.avg_pool{nd}d({n}, 2)", half
    elif form == "AdaptiveAvgPool(1)":
        expr, out = b.module("pool", f"nn.AdaptiveAvgPool{nd}d(1)") + f"({n})", (a.shape[0], *([1] * nd))
    else:
        expr, out = f"F.adaptive_avg_pool{nd}d({n}, 2)", (a.shape[0], *([2] * nd))
    b.emit("pool", f"{form}{nd}d", [f"{{o}} = {expr}"], out)


def _grouped_transpose(b: _Builder, value: Value) -> bool:
    """Whether ``value`` comes from a grouped nn.ConvTranspose (see _k_conv_transpose)."""
    return any(
        block.output == value.name and block.kind == "conv_transpose" and "groups=" in block.init[0][1]
        for block in b.blocks
    )


def _k_norm(b: _Builder) -> None:
    a = _any(b)
    n, s = a.name, a.shape
    spatial = math.prod(s[1:]) if a.rank >= 2 else 0
    forms = ["nn.LayerNorm(last)", "F.layer_norm(last)", "nn.LayerNorm(all)", "F.layer_norm(weight, bias)"]
    if a.rank >= 2 and spatial > 1:
        forms += ["nn.InstanceNorm", "F.instance_norm"]
    if a.rank in (3, 4) and not _grouped_transpose(b, a):
        forms += ["nn.BatchNorm", "nn.BatchNorm+nn.ReLU", "nn.BatchNorm+F.relu"]
    form = b.d.pick(forms)
    body: list[str]
    if form == "nn.LayerNorm(last)":
        body = ["{o} = " + b.module("norm", f"nn.LayerNorm({s[-1]})") + f"({n})"]
    elif form == "F.layer_norm(last)":
        body = [f"{{o}} = F.layer_norm({n}, ({s[-1]},))"]
    elif form == "nn.LayerNorm(all)":
        body = ["{o} = " + b.module("norm", f"nn.LayerNorm({list(s)}, elementwise_affine={b.d.flag()})") + f"({n})"]
    elif form == "F.layer_norm(weight, bias)":
        weight = b.parameter("weight", (s[-1],), 0.5)
        bias = b.parameter("bias", (s[-1],), 0.1)
        body = [f"{{o}} = F.layer_norm({n}, [{s[-1]}], {weight}, {bias}, 1e-5)"]
    elif form == "nn.InstanceNorm":
        body = ["{o} = " + b.module("norm", f"nn.InstanceNorm{a.rank - 1}d({s[0]})") + f"({n})"]
    elif form == "F.instance_norm":
        body = [f"{{o}} = F.instance_norm({n})"]
    else:
        body = ["{o} = " + b.module("bn", f"nn.BatchNorm{a.rank - 1}d({s[0]})") + f"({n})"]
        if form == "nn.BatchNorm+nn.ReLU":
            body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
        elif form == "nn.BatchNorm+F.relu":
            body.append("{o} = F.relu({o})")
    b.emit("norm", form, body, s)


def _k_binary(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    form = b.d.pick(("a + b", "torch.add(a, b)", "a * b", "torch.mul(a, b)", "a + 1.0", "torch.add(a, 0.5)",
                     "a * 2.0", "torch.mul(a, -0.5)", "1.0 + a", "a * a.shape[-1]"))
    if form in ("a + b", "torch.add(a, b)", "a * b", "torch.mul(a, b)"):
        other = b.partner(a).name
        expr = {
            "a + b": f"{n} + {other}",
            "torch.add(a, b)": f"torch.add({n}, {other})",
            "a * b": f"{n} * {other}",
            "torch.mul(a, b)": f"torch.mul({n}, {other})",
        }[form]
    else:
        expr = {
            "a + 1.0": f"{n} + 1.0",
            "torch.add(a, 0.5)": f"torch.add({n}, 0.5)",
            "a * 2.0": f"{n} * 2.0",
            "torch.mul(a, -0.5)": f"torch.mul({n}, -0.5)",
            "1.0 + a": f"1.0 + {n}",
            "a * a.shape[-1]": f"{n} * {n}.shape[-1]",
        }[form]
    relu, tail = _relu_tail(b)
    b.emit("binary", form + relu, [f"{{o}} = {expr}", *tail], a.shape)


def _k_matmul(b: _Builder) -> None:
    a = b.choose_rank((2, 3), lambda v: v.numel * v.shape[-2] <= MAX_NUMEL * 2)
    other = b.partner(a).name
    last = a.rank
    form = b.d.pick(("torch.matmul", "@"))
    rhs = f"{other}.transpose({last - 1}, {last})"
    expr = f"torch.matmul({a.name}, {rhs})" if form == "torch.matmul" else f"{a.name} @ {rhs}"
    relu, tail = _relu_tail(b)
    out = (*a.shape[:-1], a.shape[-2])
    b.emit("matmul", form + relu, [f"{{o}} = {expr}", *tail], out, True)


def _k_cat(b: _Builder) -> None:
    a = b.choose(lambda v: v.numel * 3 <= MAX_NUMEL * 2, (1, 3, 2))
    parts = [a.name, b.partner(a).name]
    if b.d.flag():
        parts.append(b.partner(a).name)
    form = b.d.pick(("torch.cat([...], dim=1)", "torch.cat((...), 1)", "torch.cat([...], -1)"))
    listed = ", ".join(parts)
    if form == "torch.cat([...], dim=1)":
        expr, axis = f"torch.cat([{listed}], dim=1)", 0
    elif form == "torch.cat((...), 1)":
        expr, axis = f"torch.cat(({listed}), 1)", 0
    else:
        expr, axis = f"torch.cat([{listed}], -1)", a.rank - 1
    out = list(a.shape)
    out[axis] *= len(parts)
    b.emit("cat", form, [f"{{o}} = {expr}"], out)
