"""torchvision's architectures at small input sizes, for tests/test_torchvision.py (not
a test file: pytest does not collect it).

PyPI's torchvision wheels are CUDA builds whose C ops do not load beside torch's CPU
wheel; the repository's conftest.py makes `import torchvision` work there (it declares
the two ops torchvision registers fake kernels for). The architectures are pure Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torchvision

__all__ = ["ARCHITECTURES", "Architecture", "build", "images"]


class Architecture:
    """A torchvision architecture at a small input size.

    Attributes:
        name: pytest-friendly identifier.
        factory: Builds the float model from the `torchvision` module.
        input_shape: One (C, H, W) image the architecture accepts; the smallest that
            keeps every stage's feature map non-empty, rounded to a convenient size.
    """

    def __init__(self, name: str, factory: Callable[[Any], nn.Module], input_shape: tuple[int, int, int]):
        self.name = name
        self.factory = factory
        self.input_shape = input_shape

    def __repr__(self) -> str:
        return f"Architecture({self.name!r})"


def _quantizable(name: str, **options: Any) -> Callable[[Any], nn.Module]:
    """A model of `torchvision.models.quantization`, float (quantize=False, no weights)."""
    return lambda tv: getattr(tv.models.quantization, name)(weights=None, quantize=False, **options)


def _plain(name: str, **options: Any) -> Callable[[Any], nn.Module]:
    return lambda tv: getattr(tv.models, name)(weights=None, **options)


ARCHITECTURES = {
    architecture.name: architecture
    for architecture in (
        Architecture("resnet18", _quantizable("resnet18"), (3, 32, 32)),
        Architecture("resnet50", _quantizable("resnet50"), (3, 32, 32)),
        Architecture("mobilenet_v2", _quantizable("mobilenet_v2"), (3, 32, 32)),
        Architecture("mobilenet_v3_large", _quantizable("mobilenet_v3_large"), (3, 32, 32)),
        # at 32x32 its last conv's output is 1x1, on which fbgemm's and x86's quantized
        # mean([2, 3]) raise (see test_torchvision's docstring)
        Architecture("shufflenet_v2_x0_5", _quantizable("shufflenet_v2_x0_5"), (3, 64, 64)),
        # without weights both build auxiliary classifiers, which only run in training, and
        # warn that their init_weights default will change: no aux heads, torch's own init
        Architecture("googlenet", _quantizable("googlenet", aux_logits=False, init_weights=False), (3, 32, 32)),
        # its smallest input: at 74x74 a 3x3 conv gets a 2x2 feature map
        Architecture("inception_v3", _quantizable("inception_v3", aux_logits=False, init_weights=False), (3, 75, 75)),
        Architecture("regnet_x_400mf", _plain("regnet_x_400mf"), (3, 32, 32)),
        Architecture("efficientnet_b0", _plain("efficientnet_b0"), (3, 32, 32)),
        Architecture("convnext_tiny", _plain("convnext_tiny"), (3, 32, 32)),
        # two 16x16 patches a side: 4 tokens plus the class token
        Architecture("vit_b_16", _plain("vit_b_16", image_size=32), (3, 32, 32)),
    )
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The architecture `name`, randomly initialised from `seed` (the global RNG is
    left as it was), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[name].factory(torchvision).eval()


def images(name: str, batch: int, seed: int) -> torch.Tensor:
    """A batch of random images of the architecture's input shape, drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *ARCHITECTURES[name].input_shape), generator=generator)
