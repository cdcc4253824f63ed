"""PT2E models for the differential suite against torchao's x86 lowering (tests/test_pt2e.py).

Each model is exported, prepared with torchao's X86InductorQuantizer (its default static
config), calibrated on its example inputs and converted: `convert(name)` returns what
`convert_pt2e` returns, with the inputs. torchao is imported by the command line's
helpers (fqlower.cli.pt2e), never by fqlower's library.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from fqlower.cli.pt2e import pt2e_converted, quiet, torchao_api


class ConvBnRelu(nn.Module):
    def __init__(self, bias: bool = True, act: Callable[[torch.Tensor], torch.Tensor] = torch.relu):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class Residual(nn.Module):
    def __init__(self, relu_after_add: bool = False):
        super().__init__()
        self.conv1, self.conv2, self.relu_after_add = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), relu_after_add
        self.stem = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        z = self.conv2(torch.relu(self.conv1(y))) + y
        return torch.relu(z) if self.relu_after_add else z


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1)
        self.stem = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.pw(torch.relu(self.dw(self.stem(x))))


class Mlp(nn.Module):
    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor] = torch.relu):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.act = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4), act

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class CatPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return F.max_pool2d(y, 2)


class ConvFlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0)


IMAGE = (2, 3, 8, 8)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv_bn_relu": (lambda: ConvBnRelu(), IMAGE),
    "conv_bn_no_bias": (lambda: ConvBnRelu(bias=False), IMAGE),
    "conv_no_bias_plain": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, bias=False)), IMAGE),
    "conv_relu6": (lambda: ConvBnRelu(act=_relu6), IMAGE),
    "conv_hardswish": (lambda: ConvBnRelu(act=F.hardswish), IMAGE),
    "conv_gelu": (lambda: ConvBnRelu(act=F.gelu), IMAGE),
    "conv_chain": (Chain, IMAGE),
    "residual_add": (lambda: Residual(), IMAGE),
    "residual_add_relu": (lambda: Residual(relu_after_add=True), IMAGE),
    "depthwise_pointwise": (Depthwise, IMAGE),
    "pointwise_1x1": (lambda: nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 8, 1)), IMAGE),
    "mlp_relu": (lambda: Mlp(), (4, 16)),
    "mlp_gelu": (lambda: Mlp(act=F.gelu), (4, 16)),
    "linear_3d": (lambda: Mlp(), (2, 5, 16)),
    "cat_maxpool": (CatPool, IMAGE),
    "conv_flatten_linear": (ConvFlattenLinear, IMAGE),
}


def convert(name: str, seed: int = 0) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor, ...]]:
    """`convert_pt2e`'s model for MODELS[name], calibrated on its example inputs (as the
    command line makes one: fqlower.cli.pt2e)."""
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)
    return pt2e_converted(make(), inputs), inputs


def torchao_lowering(model: torch.fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """torchao's own x86 lowering (it changes its input: give it a copy)."""
    lower = torchao_api()[3]
    with quiet():
        return lower(model, inputs)
