"""Block kinds with weights: linear, conv, transposed conv (modules and functionals),
RNNs and their cells, embeddings. See models.py."""

from __future__ import annotations

from collections.abc import Sequence


from gen_program import Draw, NUM_EMBEDDINGS, _Builder, _any, _relu_tail, _tuple


def _conv_geometry(spatial: Sequence[int], d: Draw) -> tuple[int, int, int, tuple[int, ...]]:
    """(kernel, stride, padding, output spatial) with every output dim >= 1."""
    smallest = min(spatial)
    options = [(1, 1, 0), (3, 1, 1), (3, 2, 1), (1, 2, 0)]
    if smallest >= 3:
        options.append((3, 1, 0))
    if smallest >= 2:
        options.append((2, 2, 0))
    k, s, p = d.pick(options)
    return k, s, p, tuple((n + 2 * p - k) // s + 1 for n in spatial)


def _conv_call_args(k: int, s: int, p: int, groups: int, bias: bool) -> str:
    args = [str(k)]
    if s != 1:
        args.append(f"stride={s}")
    if p:
        args.append(f"padding={p}")
    if groups != 1:
        args.append(f"groups={groups}")
    if not bias:
        args.append("bias=False")
    return ", ".join(args)


def _channels(b: _Builder, c_in: int) -> tuple[int, int]:
    """(out channels, groups)."""
    c_out = b.d.pick((c_in, 2, 3, 4))
    groups = b.d.pick((1, c_in)) if c_in > 1 and c_out % c_in == 0 else 1
    return c_out, groups


def _k_linear(b: _Builder) -> None:
    a = _any(b)
    features = a.shape[-1]
    out_features = b.d.pick((features, 2, 3, 4))
    bias = not b.d.flag()
    tails = ["", "+nn.ReLU", "+F.relu", "+torch.relu", "+nn.LeakyReLU", "+nn.Tanh"]
    if a.rank == 1:
        tails += ["+nn.BatchNorm1d", "+nn.BatchNorm1d+nn.ReLU"]
    tail = b.d.pick(tails)
    args = f"{features}, {out_features}" + ("" if bias else ", bias=False")
    body = ["{o} = " + b.module("linear", f"nn.Linear({args})") + f"({a.name})"]
    if "BatchNorm1d" in tail:
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm1d({out_features})") + "({o})")
    if tail.endswith("nn.ReLU"):
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    elif tail == "+F.relu":
        body.append("{o} = F.relu({o})")
    elif tail == "+torch.relu":
        body.append("{o} = torch.relu({o})")
    elif tail == "+nn.LeakyReLU":
        body.append("{o} = " + b.module("leaky_relu", "nn.LeakyReLU(0.1)") + "({o})")
    elif tail == "+nn.Tanh":
        body.append("{o} = " + b.module("tanh", "nn.Tanh()") + "({o})")
    b.emit("linear", "nn.Linear" + tail, body, (*a.shape[:-1], out_features))


def _k_conv(b: _Builder) -> None:
    a = b.choose_rank((3, 2, 4))
    nd = a.rank - 1
    c_out, groups = _channels(b, a.shape[0])
    k, s, p, spatial = _conv_geometry(a.shape[1:], b.d)
    bias = not b.d.flag()
    tail = b.d.pick(("", "+BatchNorm", "+nn.ReLU", "+BatchNorm+nn.ReLU", "+F.relu", "+BatchNorm+torch.relu"))
    body = ["{o} = " + b.module("conv", f"nn.Conv{nd}d({a.shape[0]}, {c_out}, {_conv_call_args(k, s, p, groups, bias)})") + f"({a.name})"]
    if "BatchNorm" in tail:
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm{nd}d({c_out})") + "({o})")
    if tail.endswith("nn.ReLU"):
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    elif tail.endswith("F.relu"):
        body.append("{o} = F.relu({o})")
    elif tail.endswith("torch.relu"):
        body.append("{o} = torch.relu({o})")
    b.emit("conv", f"nn.Conv{nd}d" + tail, body, (c_out, *spatial))


MAX_TRANSPOSE_INPUT = 12  # spatial size above which no transposed conv is offered


def _transpose_geometry(spatial: Sequence[int], d: Draw) -> tuple[int, int, int, int, tuple[int, ...]]:
    """(kernel, stride, padding, output_padding, output spatial); outputs at most 12
    unless the input is larger (kernel 1, stride 1 keeps the size)."""
    options = [(1, 1, 0, 0), (3, 1, 1, 0), (2, 1, 0, 0), (2, 2, 0, 0), (3, 2, 1, 1)]
    options = [
        o for o in options if o[0] == 1 or max((n - 1) * o[1] - 2 * o[2] + o[0] + o[3] for n in spatial) <= 12
    ]
    k, s, p, op = d.pick(options)
    return k, s, p, op, tuple((n - 1) * s - 2 * p + k + op for n in spatial)


def _k_conv_transpose(b: _Builder) -> None:
    a = b.choose_rank((3, 2), lambda v: max(v.shape[1:]) <= MAX_TRANSPOSE_INPUT)
    nd = a.rank - 1
    tail = b.d.pick(("", "+BatchNorm", "+nn.ReLU"))
    c_out, groups = _channels(b, a.shape[0])
    if tail == "+BatchNorm":
        # torch's fuse_conv_bn_weights(transpose=True) mis-shapes grouped weights:
        # prepare_fx fails on every grouped ConvTranspose followed by BatchNorm.
        groups = 1
    k, s, p, op, spatial = _transpose_geometry(a.shape[1:], b.d)
    bias = not b.d.flag()
    args = _conv_call_args(k, s, p, groups, bias)
    if op:
        args += f", output_padding={op}"
    body = ["{o} = " + b.module("deconv", f"nn.ConvTranspose{nd}d({a.shape[0]}, {c_out}, {args})") + f"({a.name})"]
    if tail == "+BatchNorm":
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm{nd}d({c_out})") + "({o})")
    elif tail == "+nn.ReLU":
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    b.emit("conv_transpose", f"nn.ConvTranspose{nd}d" + tail, body, (c_out, *spatial))


def _k_functional_linear(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    features = a.shape[-1]
    out_features = b.d.pick((features, 2, 3, 4))
    form = b.d.pick(("F.linear(x, w)", "F.linear(x, w, b)", "F.linear(x, weight=w, bias=b)", "F.linear(input=x, weight=w)"))
    weight = b.parameter("weight", (out_features, features), 0.3)
    if form in ("F.linear(x, w, b)", "F.linear(x, weight=w, bias=b)"):
        bias = b.parameter("bias", (out_features,), 0.1)
    expr = {
        "F.linear(x, w)": lambda: f"F.linear({n}, {weight})",
        "F.linear(x, w, b)": lambda: f"F.linear({n}, {weight}, {bias})",
        "F.linear(x, weight=w, bias=b)": lambda: f"F.linear({n}, weight={weight}, bias={bias})",
        "F.linear(input=x, weight=w)": lambda: f"F.linear(input={n}, weight={weight})",
    }[form]()
    relu, tail = _relu_tail(b, allow_method=False)
    b.emit("functional_linear", form + relu, [f"{{o}} = {expr}", *tail], (*a.shape[:-1], out_features))


def _k_functional_conv(b: _Builder) -> None:
    a = b.choose_rank((3, 2))
    n = a.name
    nd = a.rank - 1
    c_in = a.shape[0]
    transpose = b.d.flag() and nd == 2 and max(a.shape[1:]) <= MAX_TRANSPOSE_INPUT
    c_out, groups = _channels(b, c_in)
    with_bias = not b.d.flag()
    if transpose:
        form = b.d.pick(("positional", "positional tuples", "defaults", "keywords"))
        if form == "defaults":  # stride 1, padding 0, groups 1
            k, s, p, op = b.d.pick((1, 2)), 1, 0, 0
            groups, spatial = 1, tuple(x + k - 1 for x in a.shape[1:])
        else:
            k, s, p, op, spatial = _transpose_geometry(a.shape[1:], b.d)
        weight = b.parameter("weight", (c_in, c_out // groups, k, k), 0.3)
        bias = b.parameter("bias", (c_out,), 0.1) if with_bias else "None"
        if form == "defaults":
            expr = f"F.conv_transpose2d({n}, {weight}" + (f", {bias})" if with_bias else ")")
        elif form == "positional":
            expr = f"F.conv_transpose2d({n}, {weight}, {bias}, {s}, {p}, {op}, {groups}, 1)"
        elif form == "positional tuples":
            expr = f"F.conv_transpose2d({n}, {weight}, {bias}, ({s}, {s}), ({p}, {p}), ({op}, {op}), {groups}, (1, 1))"
        else:
            expr = (
                f"F.conv_transpose2d({n}, {weight}, bias={bias}, stride={s}, padding={p}, "
                f"output_padding={op}, groups={groups})"
            )
        b.emit("functional_conv", f"F.conv_transpose2d {form}", [f"{{o}} = {expr}"], (c_out, *spatial))
        return
    form = b.d.pick(("positional", "positional tuples", "defaults", "keywords"))
    if form == "defaults":
        k, s, p, groups, spatial = 1, 1, 0, 1, tuple(a.shape[1:])
    else:
        k, s, p, spatial = _conv_geometry(a.shape[1:], b.d)
    weight = b.parameter("weight", (c_out, c_in // groups, *([k] * nd)), 0.3)
    bias = b.parameter("bias", (c_out,), 0.1) if with_bias else "None"
    op = f"F.conv{nd}d"
    if form == "defaults":
        expr = f"{op}({n}, {weight}" + (f", {bias})" if with_bias else ")")
    elif form == "positional":
        expr = f"{op}({n}, {weight}, {bias}, {s}, {p}, 1, {groups})"
    elif form == "positional tuples":
        expr = f"{op}({n}, {weight}, {bias}, {_tuple([s] * nd)}, {_tuple([p] * nd)}, {_tuple([1] * nd)}, {groups})"
    else:
        expr = f"{op}({n}, {weight}, bias={bias}, stride={s}, padding={p}, groups={groups})"
    relu, tail = _relu_tail(b, allow_method=False)
    b.emit("functional_conv", f"{op} {form}" + relu, [f"{{o}} = {expr}", *tail], (c_out, *spatial))


def _k_rnn(b: _Builder) -> None:
    a = b.choose_rank((2,))
    n = a.name
    channels = a.shape[0]
    cls = b.d.pick(("LSTM", "GRU"))
    hidden = b.d.pick((channels, 2, 3))
    layers = b.d.pick((1, 2))
    bidirectional = b.d.flag()
    batch_first = not b.d.flag()
    args = f"{channels}, {hidden}"
    if layers != 1:
        args += f", num_layers={layers}"
    if bidirectional:
        args += ", bidirectional=True"
    if batch_first:
        args += ", batch_first=True"
    module = b.module(cls.lower(), f"nn.{cls}({args})")
    if batch_first:
        body = [f"{{o}} = {module}({n}.transpose(1, 2))[0]", "{o} = {o}.transpose(1, 2)"]
    else:
        body = [f"{{o}} = {module}({n}.permute(2, 0, 1))[0]", "{o} = {o}.permute(1, 2, 0)"]
    variant = f"nn.{cls}" + (" batch_first" if batch_first else "") + (" bidirectional" if bidirectional else "")
    b.emit("rnn", variant, body, (hidden * (2 if bidirectional else 1), a.shape[1]), False)


def _k_rnn_cell(b: _Builder) -> None:
    a = b.choose_rank((1,))
    n = a.name
    features = a.shape[0]
    cls = b.d.pick(("RNNCell", "GRUCell", "LSTMCell"))
    with_state = b.d.flag()
    hidden = features if with_state else b.d.pick((features, 2, 3))
    args = f"{features}, {hidden}"
    if cls == "RNNCell" and b.d.flag():
        args += ", nonlinearity='relu'"
    module = b.module("cell", f"nn.{cls}({args})")
    if cls == "LSTMCell":
        if with_state:
            h, c = b.partner(a).name, b.partner(a).name
            expr = f"{module}({n}, ({h}, {c}))[0]"
        else:
            expr = f"{module}({n})[0]"
    else:
        expr = f"{module}({n}, {b.partner(a).name})" if with_state else f"{module}({n})"
    b.emit("rnn_cell", f"nn.{cls}" + (" with state" if with_state else ""), [f"{{o}} = {expr}"], (hidden,))


def _k_embedding(b: _Builder) -> None:
    idx = b.indices()
    dim = b.d.pick((3, 4, 2))
    form = b.d.pick(("nn.Embedding", "nn.EmbeddingBag(sum)", "nn.EmbeddingBag(mean)", "nn.EmbeddingBag(max)"))
    if form == "nn.Embedding":
        expr, out = b.module("emb", f"nn.Embedding({NUM_EMBEDDINGS}, {dim})") + f"({idx.name})", (idx.shape[0], dim)
    else:
        mode = form[len("nn.EmbeddingBag(") : -1]
        expr = b.module("bag", f"nn.EmbeddingBag({NUM_EMBEDDINGS}, {dim}, mode={mode!r})") + f"({idx.name})"
        out = (dim,)
    b.emit("embedding", form, [f"{{o}} = {expr}"], out, True)


# Ordered simple -> complex: hypothesis shrinks a block's kind towards the front.
