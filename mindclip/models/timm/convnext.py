"""timm's ``ConvNeXt`` (``convnext.py``, v1) for the names open_clip's configs use
(``convnext_tiny`` ... ``convnext_xxlarge``): a 4x4/stride-4 patch stem with a LayerNorm,
four stages (LayerNorm + 2x2/stride-2 convolution between them) of blocks ``x + gamma *
mlp(norm(conv_dw(x)))`` with a 7x7 depthwise convolution, and timm's
``NormMlpClassifierHead`` (average pool, LayerNorm, classifier). Parameter names are timm's.

Maps stay channels last from the stem to the head (``(B, H, W, C)``): the LayerNorms and the
MLP act on the last axis as timm's channels-last block does, and the strided convolutions are
matmuls over patches, so no NCHW <-> NHWC transposes run between the layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn

from ..checkpointing import Blocks
from ..layers import ScaleChannels
from ..patch import PatchEmbedding
from .conv import ChannelNorm, ConvTrunk, DepthwiseConv
from ..rng import drop_path_or_identity
from .layers import Mlp, linear, stage_drop_path_rates
from .registry import TimmArch, register_timm_model


@dataclass(frozen=True, kw_only=True)
class ConvNeXtArch(TimmArch):
    """timm ``ConvNeXt`` ``model_args``: blocks per stage (``depths``), stage widths (``dims``),
    ``kernel_size`` of the depthwise convolutions, ``ls_init_value`` (LayerScale ``gamma``),
    ``norm_eps``, ``mlp_ratio``. Fully convolutional: built at open_clip's image size."""

    depths: Tuple[int, ...]
    dims: Tuple[int, ...]
    patch_size: int = 4
    kernel_size: int = 7
    mlp_ratio: float = 4.0
    ls_init_value: Optional[float] = 1e-6
    norm_eps: float = 1e-6

    POOLS: ClassVar[Tuple[str, ...]] = ("", "avg")
    ANY_IMAGE_SIZE: ClassVar[bool] = True

    @property
    def num_features(self) -> int:
        return self.dims[-1]

    def trunk_class(self):
        return ConvNeXt


class PatchConv(PatchEmbedding):
    """A convolution with kernel = stride (timm's ``nn.Conv2d`` of the stem and the
    downsampling layers) as a matmul over patches, channels-last output ``(B, H/p, W/p, C)``;
    its input is the image ``(B, 3, H, W)`` (``on_image``) or a channels-last map."""

    def __init__(self, cin: int, cout: int, patch: int, on_image: bool = False):
        super().__init__(cout, patch, has_bias=True, in_channels=cin)
        self.on_image = on_image

    def construct(self, x):
        if not self.on_image:
            return self.channels_last(x)
        b, _, h, w = x.shape
        p = self.patch_size
        return super().construct(x).reshape(b, h // p, w // p, self.width)


class ConvNeXtBlock(nn.Cell):
    """timm's ``ConvNeXtBlock`` (channels-last form): ``x + drop_path(gamma * mlp(norm(conv_dw(x))))``."""

    def __init__(self, arch: ConvNeXtArch, dim: int, drop_path: float):
        super().__init__()
        self.conv_dw = DepthwiseConv(dim, arch.kernel_size)
        self.norm = ChannelNorm(dim, arch.norm_eps)
        self.mlp = Mlp(dim, int(arch.mlp_ratio * dim), "gelu")
        self.scaled = arch.ls_init_value is not None
        if self.scaled:
            self.gamma = Parameter(Tensor(np.full((dim,), arch.ls_init_value, np.float32)), name="gamma")
            self.scale = ScaleChannels()
        self.drop_path = drop_path_or_identity(drop_path)

    def construct(self, x):
        y = self.mlp(self.norm(self.conv_dw(x)))
        if self.scaled:
            y = self.scale(y, self.gamma)
        return self.drop_path(y) + x


class ConvNeXtStage(nn.Cell):
    """timm's ``ConvNeXtStage``: ``downsample`` (LayerNorm, 2x2/stride-2 convolution) where
    the width or resolution changes, then ``blocks``."""

    def __init__(self, arch: ConvNeXtArch, cin: int, cout: int, stride: int, rates: List[float]):
        super().__init__()
        self.downsample = (nn.SequentialCell([ChannelNorm(cin, arch.norm_eps), PatchConv(cin, cout, stride)])
                           if stride > 1 or cin != cout else nn.Identity())
        self.blocks = Blocks(ConvNeXtBlock(arch, cout, rate) for rate in rates)

    def construct(self, x):
        return self.blocks(self.downsample(x))


class NormMlpClassifierHead(nn.Cell):
    """timm's ``NormMlpClassifierHead`` without a hidden layer: ``global_pool`` (the mean over
    the map), ``norm``, ``drop``, ``fc`` (a Linear when ``num_classes`` > 0)."""

    def __init__(self, width: int, num_classes: int, eps: float):
        super().__init__()
        self.norm = ChannelNorm(width, eps)
        self.fc = linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def construct(self, x):
        return self.fc(self.norm(x.mean(axis=(1, 2))))


class ConvNeXt(ConvTrunk):
    """timm's ``ConvNeXt`` (patch stem, ``conv_mlp=False``, head norm after pooling).

    ``forward_tokens`` gives the last map's positions as tokens ``(B, H*W, C)``, before the
    head's norm (timm's ``forward_features``)."""

    family = "ConvNeXt"

    def __init__(self, arch: ConvNeXtArch, global_pool: str, num_classes: int = 0,
                 pool: Optional[str] = None, drop_path: float = 0.0, patch_dropout: float = 0.0):
        super().__init__(arch, global_pool, pool, patch_dropout)
        dims = arch.dims
        self.stem = nn.SequentialCell([PatchConv(3, dims[0], arch.patch_size, on_image=True),
                                       ChannelNorm(dims[0], arch.norm_eps)])
        self.stages = nn.SequentialCell([
            ConvNeXtStage(arch, dims[max(i - 1, 0)], dims[i], 2 if i > 0 else 1, rates)
            for i, rates in enumerate(stage_drop_path_rates(drop_path, arch.depths))])
        self.norm_pre = nn.Identity()
        self.head = NormMlpClassifierHead(dims[-1], num_classes, arch.norm_eps)
        self.num_features = num_classes if num_classes > 0 else dims[-1]

    def forward_features(self, x):
        return self.norm_pre(self.stages(self.stem(x)))

    def lock_groups(self) -> List[list]:
        """timm's ``group_matcher``: the stem, then each stage's downsampling and each of its
        blocks, then the head."""
        groups = [[self.stem]]
        for stage in self.stages:
            groups.append([stage.downsample])
            groups.extend([block] for block in stage.blocks)
        return groups + [[self.norm_pre, self.head]]


for _name, _depths, _dims in (
        ("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768)),
        ("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768)),
        ("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024)),
        ("convnext_large", (3, 3, 27, 3), (192, 384, 768, 1536)),
        ("convnext_xlarge", (3, 3, 27, 3), (256, 512, 1024, 2048)),
        ("convnext_xxlarge", (3, 4, 30, 3), (384, 768, 1536, 3072))):
    register_timm_model(_name, ConvNeXtArch(depths=_depths, dims=_dims,
                                            norm_eps=1e-5 if _name == "convnext_xxlarge" else 1e-6))
