"""Built-in example models, for the demo, the docs and quick experiments."""


import torch
import torch.nn as nn
import torch.nn.functional as F


class DemoNet(nn.Module):
    """A small network touching the main pattern families: conv+bn+relu (fused
    module), a residual add (binary op), pooling and flatten (copy and shape ops),
    a functional linear with its own parameters (prepacked, folded weight), a
    sigmoid (fixed qparams) and a linear head (module)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.proj_weight = nn.Parameter(torch.randn(16, 8) * 0.3)
        self.proj_bias = nn.Parameter(torch.zeros(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = F.relu(self.block(y) + y)
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        y = torch.sigmoid(F.linear(y, self.proj_weight, self.proj_bias))
        return self.head(y)


def demo_inputs(seed: int = 0, batch: int = 4) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 16, 16, generator=generator),)


def demo_reference_model(backend: str = "fbgemm"):
    """DemoNet quantized (static int8) up to the reference model, with its maps,
    calibrated on generated data."""
    from torch.ao.quantization import get_default_qconfig_mapping

    from fqlower.reference import reference_model

    torch.manual_seed(0)
    return reference_model(DemoNet(), demo_inputs(batch=32), get_default_qconfig_mapping(backend))
