"""Structural reparameterisation (RepVGG, MobileOne, FastViT): blocks that train as parallel
branches of convolutions and BatchNorms and, for inference and export, fold into one
convolution with the same outputs. :class:`Reparameterizable` is such a block;
:func:`reparameterize_model` (timm's name) fuses every one in a model, in place."""
from __future__ import annotations

import time
from typing import Tuple

import numpy as np
from mindspore import Tensor, nn


class Reparameterizable(nn.Cell):
    """A block of parallel branches that :meth:`reparameterize` fuses into ``reparam_conv``
    (``fused_conv`` built from :meth:`fused_kernel`); ``construct`` runs whichever it has."""

    reparameterized = False
    branch_names: Tuple[str, ...] = ()  # the sub-cells the fused convolution replaces

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fused_conv(self) -> nn.Cell:
        raise NotImplementedError

    def fuses_inner(self) -> Tuple[nn.Cell, ...]:
        """Inner reparameterizable blocks whose branches this block's kernel folds in itself."""
        return ()

    def reparameterize(self, prefix: str = "") -> None:
        """timm's ``reparameterize``: the branches become one convolution with their sum's
        kernel and bias (BatchNorms folded in with their running statistics), in place;
        ``prefix``: this block's name in the model, for the new parameters' names."""
        if self.reparameterized:
            return
        kernel, bias = self.fused_kernel()
        conv = self.fused_conv()
        conv.weight.set_data(Tensor(kernel.astype(np.float32)))
        conv.bias.set_data(Tensor(bias.astype(np.float32)))
        for name in self.branch_names:
            if hasattr(self, name):
                delattr(self, name)
        self.reparam_conv = conv
        for param_name, param in conv.parameters_and_names():
            param.name = ".".join(p for p in (prefix, "reparam_conv", param_name) if p)
        self.reparameterized = True


def reparameterize_model(model: nn.Cell) -> nn.Cell:
    """timm's ``reparameterize_model``: every reparameterizable block of ``model`` fused, in
    place, into single convolutions (BatchNorms folded in with their running statistics), for
    inference and export; outputs equal the branched form's to float rounding. Returns
    ``model``; its parameter names change (``reparam_conv``), so it is not saved back as a
    training checkpoint. Models without such blocks are returned unchanged. Pass the whole
    model (not a tower of it): its compiled graphs are dropped with it."""
    named = [(name, cell) for name, cell in model.cells_and_names() if isinstance(cell, Reparameterizable)]
    # a block that fuses its inner blocks' branches itself (FastViT's RepMixer) comes first
    inner = {id(block) for _, cell in named if not cell.reparameterized for block in cell.fuses_inner()}
    for name, cell in named:
        if id(cell) not in inner:
            cell.reparameterize(name)
    # graphs compiled for the branched form must not be reused: new identities for every cell
    # (MindSpore keys its compiled graphs by them) and no cached public calls
    stamp = time.time_ns()
    for i, (_, cell) in enumerate(model.cells_and_names()):
        cell.__dict__["_create_time"] = stamp + i
    model.__dict__.pop("_compiled_calls", None)
    if named:
        model.__dict__["_reparameterized"] = True
    return model


def is_reparameterized(model: nn.Cell) -> bool:
    """Whether :func:`reparameterize_model` fused ``model`` (an inference form: its parameter
    names are not the training checkpoint's)."""
    return bool(model.__dict__.get("_reparameterized", False))
