"""Built-in example models, for the demo, the docs and quick experiments."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DemoNet(nn.Module):
    """A small network touching the main pattern families: conv+bn+relu, a residual
    add, pooling, flatten and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = F.relu(self.block(y) + y)
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.head(y)


def demo_inputs(seed: int = 0) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 16, 16, generator=generator),)


def demo_reference_model(backend: str = "fbgemm"):
    """DemoNet quantized (static int8) up to the reference model, with its maps."""
    from torch.ao.quantization import get_default_qconfig_mapping

    from fqlower.reference import reference_model

    torch.manual_seed(0)
    return reference_model(DemoNet(), demo_inputs(), get_default_qconfig_mapping(backend))
