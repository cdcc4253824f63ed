"""Where a generated block's modules live: flat on the model, or in a scope module
one, two or three levels deep, in containers named the way real models name them.

A *placement* is one drawn choice per block (:data:`PLACEMENTS`, simplest first, so
it shrinks to flat). ``None`` is flat: the block's modules sit on the model as
``b<i>_<role>``. Otherwise it lists the path parts of the block's scope module
``Block<i>``: ``"name:constructor"`` parts are containers, the last part is the
scope itself. In names, ``{i}`` is the block index, ``{g}`` its stage (blocks 0-2
are in stage 1, 3-5 in stage 2: consecutive blocks share containers, as in
``layer1.0``/``layer1.1``), ``{n}``/``{n1}`` the parent's child count (0- or
1-based: a numbered child is always the next one, so numbered containers are built
with ``append``). Containers are shared by the blocks that name them, each name
always with the same type, so one ``set_module_name(<container>, None)`` can switch
several blocks off. Depth 2: ``layer1.0`` (ResNet), ``features.2`` (VGG),
``stage2.unit1``, ``blocks.0`` (ViT); depth 3: ``encoder.layers.0`` (BERT),
``trunk_output.block1.block1-0`` (RegNet, hyphen included), ``backbone.body.layer1`` (detection
backbones), ``features.3.block`` (MobileNetV3). Names are identifiers, digits, or
(RegNet's) neither, which only a ModuleDict's subscript reaches: ``["block1-0"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn

_D2 = (
    ("layer{g}:nn.Sequential", "{n}"),
    ("features:nn.Sequential", "{n}"),
    ("stage{g}:nn.ModuleDict", "unit{n1}"),
    ("blocks:nn.ModuleList", "{n}"),
)
_D3 = (
    ("encoder:nn.ModuleDict", "layers:nn.ModuleList", "{n}"),
    ("trunk_output:nn.ModuleDict", "block{g}:nn.ModuleDict", "block{g}-{n}"),
    ("backbone:nn.ModuleDict", "body:nn.ModuleDict", "layer{n1}"),
    ("features:nn.Sequential", "{n}:nn.ModuleDict", "block"),
)
# Shares: flat 2/7, one level 1/7, two levels 2/7, three levels 2/7.
PLACEMENTS: tuple[tuple[str, ...] | None, ...] = (None, None, ("b{i}",)) * 4 + (*_D2, *_D3) * 2


class Tree:
    """The containers placed so far (path -> child count), while drawing."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, ...], int] = {(): 0}

    def place(self, placement: Sequence[str] | None, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(path of the scope module, constructors of the containers above it); ``()`` when flat."""
        path: tuple[str, ...] = ()
        containers: list[str] = []
        for part in placement or ():
            template, _, constructor = part.partition(":")
            count = self.children[path]
            name = template.format(i=index, g=1 + index // 3, n=count, n1=count + 1)
            if (*path, name) not in self.children:
                self.children[path] = count + 1
                if constructor:
                    self.children[(*path, name)] = 0
            path = (*path, name)
            if constructor:
                containers.append(constructor)
        return path, tuple(containers)


def access(path: Sequence[str]) -> str:
    """Python for the module at ``path`` below ``self``: ``.layer1[0].conv``, ``.block1["block1-0"]``."""
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" if part.isidentifier() else f"[{part!r}]" for part in path)


def attach(root: nn.Module, path: Sequence[str], containers: Sequence[str], module: nn.Module, namespace: dict[str, Any]) -> None:
    """Put ``module`` at ``path`` below ``root``, creating the missing containers."""
    parent = root
    for name, constructor in zip(path[:-1], containers):
        if name not in parent._modules:
            parent.add_module(name, eval(constructor, dict(namespace))())
        parent = parent._modules[name]
    parent.add_module(path[-1], module)


def attach_source(path: Sequence[str], containers: Sequence[str], module: str, created: set[tuple[str, ...]]) -> list[str]:
    """The statements :func:`attach` amounts to in ``__init__`` (``created``: paths made so far)."""
    lines = []
    for depth in range(1, len(path) + 1):
        if path[:depth] in created:
            continue
        created.add(path[:depth])
        value = f"{containers[depth - 1]}()" if depth < len(path) else module
        parent, name = "self" + access(path[: depth - 1]), path[depth - 1]
        if name.isdigit():
            lines.append(f"{parent}.append({value})")
        else:
            lines.append(f"{parent}.{name} = {value}" if name.isidentifier() else f"{parent}[{name!r}] = {value}")
    return lines
