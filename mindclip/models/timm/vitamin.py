"""timm's ViTamin (``vitamin.py``) for the names open_clip's configs use (``vitamin_small_224``
... ``vitamin_xlarge_384``): a convolutional embedding (``MbConvStages``: a two-convolution
stem, two stages of pre-norm MBConv blocks, a LayerNorm + 3x3/stride-2 convolution) whose
stride-16 map is the token sequence of timm's ``VisionTransformer`` with ``GeGluMlp`` blocks,
no class token and average pooling (XL: no position embedding). Parameter names are timm's
(``patch_embed.backbone.*``, ``blocks.N.mlp.{norm,w0,w1,w2}``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from mindspore import nn

from ..checkpointing import Blocks
from ..layers import LayerNorm, make_activation
from .conv import AvgPool3x3, ChannelNorm, Conv, DepthwiseConv, EveryOther
from ..rng import drop_path_or_identity
from .layers import linear
from .registry import register_timm_model
from .vit import Block, ViTArch, VisionTransformer


@dataclass(frozen=True)
class ViTaminArch(ViTArch):
    """timm ``vitamin_*`` ``model_args`` and ``embed_cfg``: ``stem_width``, the MBConv stages'
    widths ``conv_dims`` and depths ``conv_depths`` (then the ViT's ``width``). Without
    position embeddings (``pos_embed`` False, the XL models) any image size is taken."""

    stem_width: int = 64
    conv_dims: Tuple[int, int] = (64, 128)
    conv_depths: Tuple[int, int] = (2, 4)

    @property
    def any_image_size(self) -> bool:
        return not self.pos_embed

    def trunk_class(self):
        return ViTamin


def _make_divisible(v: float, divisor: int = 8) -> int:
    # timm's make_divisible (round_limit 0.9)
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class Stem(nn.Cell):
    """timm's ViTamin ``Stem``: ``conv1`` (3x3/2 on the image), ``norm1`` (LayerNorm + GELU),
    ``conv2`` (3x3)."""

    def __init__(self, width: int, image_size: int):
        super().__init__()
        self.conv1 = Conv(3, width, 3, 2, image_size, on_image=True)
        self.norm1 = ChannelNorm(width, 1e-6)
        self.act = make_activation("gelu")
        self.conv2 = Conv(width, width, 3, 1, (image_size + 1) // 2)

    def construct(self, x):
        return self.conv2(self.act(self.norm1(self.conv1(x))))


class Downsample2d(nn.Cell):
    """timm's ViTamin ``Downsample2d``: ``pool`` (3x3/2 average) then ``expand`` (a 1x1
    convolution where the width changes)."""

    def __init__(self, cin: int, cout: int, input_size: int):
        super().__init__()
        self.pool = AvgPool3x3(cin, input_size)
        self.expand = Conv(cin, cout, 1) if cin != cout else nn.Identity()

    def construct(self, x):
        return self.expand(self.pool(x))


class MbConvLNBlock(nn.Cell):
    """timm's ``MbConvLNBlock``: ``shortcut(x) + conv3_1x1(gelu(conv2_kxk(gelu(conv1_1x1(
    pre_norm(x))))))``, the depthwise 3x3 strided in a stage's first block (computed at stride
    1, every other row and column kept: the same sums)."""

    def __init__(self, cin: int, cout: int, stride: int, input_size: int, drop_path: float):
        super().__init__()
        mid = _make_divisible(cout * 4.0)
        if stride == 2:
            self.shortcut = Downsample2d(cin, cout, input_size)
        elif cin != cout:
            self.shortcut = Conv(cin, cout, 1)
        else:
            self.shortcut = nn.Identity()
        self.pre_norm = ChannelNorm(cin, 1e-6)
        self.conv1_1x1 = Conv(cin, mid, 1)
        self.act1 = make_activation("gelu")
        self.conv2_kxk = DepthwiseConv(mid, 3)
        self.every_other = EveryOther(input_size) if stride == 2 else nn.Identity()
        self.act2 = make_activation("gelu")
        self.conv3_1x1 = Conv(mid, cout, 1)
        self.drop_path = drop_path_or_identity(drop_path)

    def construct(self, x):
        shortcut = self.shortcut(x)
        y = self.every_other(self.conv2_kxk(self.act1(self.conv1_1x1(self.pre_norm(x)))))
        return self.drop_path(self.conv3_1x1(self.act2(y))) + shortcut


class StridedConv(nn.Cell):
    """timm's ViTamin ``StridedConv``: ``norm`` (LayerNorm) then ``proj`` (3x3/2)."""

    def __init__(self, cin: int, cout: int, input_size: int):
        super().__init__()
        self.norm = ChannelNorm(cin, 1e-6)
        self.proj = Conv(cin, cout, 3, 2, input_size)

    def construct(self, x):
        return self.proj(self.norm(x))


class MbConvStages(nn.Cell):
    """timm's ``MbConvStages``: ``stem``, two ``stages`` of MBConv blocks (each halving the
    map), ``pool`` (the strided convolution to the ViT's width): stride 16 in all."""

    def __init__(self, arch: ViTaminArch):
        super().__init__()
        size = (arch.image_size + 1) // 2
        self.stem = Stem(arch.stem_width, arch.image_size)
        stages, cin = [], arch.stem_width
        for dim, depth in zip(arch.conv_dims, arch.conv_depths):
            blocks = []
            for d in range(depth):
                blocks.append(MbConvLNBlock(cin if d == 0 else dim, dim, 2 if d == 0 else 1, size, 0.0))
                size = (size + 1) // 2 if d == 0 else size
            stages.append(Blocks(blocks))
            cin = dim
        self.stages = nn.SequentialCell(stages)
        self.pool = StridedConv(cin, arch.width, size)

    def construct(self, x):
        return self.pool(self.stages(self.stem(x)))


class HybridEmbed(nn.Cell):
    """timm's ``HybridEmbed`` (``proj=False``) over :class:`MbConvStages`: the last map,
    row-major, is the token sequence."""

    def __init__(self, arch: ViTaminArch):
        super().__init__()
        self.backbone = MbConvStages(arch)

    def construct(self, x):
        x = self.backbone(x)
        b, h, w, c = x.shape
        return x.reshape(b, h * w, c)


class GeGluMlp(nn.Cell):
    """timm's ViTamin ``GeGluMlp``: ``w2(gelu(w0(norm(x))) * w1(norm(x)))``, its own LayerNorm."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = LayerNorm(width, 1e-6)
        self.w0 = linear(width, hidden)
        self.act = make_activation("gelu")
        self.w1 = linear(width, hidden)
        self.w2 = linear(hidden, width)

    def construct(self, x):
        x = self.norm(x)
        return self.w2(self.act(self.w0(x)) * self.w1(x))


class ViTamin(VisionTransformer):
    """timm's ``VisionTransformer`` as ``_create_vitamin`` builds it: the MBConv embedding,
    ``GeGluMlp`` blocks."""

    @staticmethod
    def _patch_embed(arch: ViTaminArch) -> Optional[nn.Cell]:
        return HybridEmbed(arch)

    @staticmethod
    def _block(arch: ViTaminArch, drop_path: float) -> nn.Cell:
        return Block(arch, drop_path, mlp=GeGluMlp(arch.width, arch.mlp_dim))


_VIT = dict(patch_size=16, mlp_ratio=2.0, class_token=False, global_pool="avg")
_SIZES = {"small": dict(width=384, layers=14, heads=6, stem_width=64, conv_dims=(64, 128)),
          "base": dict(width=768, layers=14, heads=12, stem_width=128, conv_dims=(128, 256)),
          "large": dict(width=1024, layers=31, heads=16, stem_width=160, conv_dims=(160, 320)),
          "large2": dict(width=1024, layers=31, heads=16, stem_width=160, conv_dims=(160, 320)),
          "xlarge": dict(width=1152, layers=32, heads=16, stem_width=192, conv_dims=(192, 384),
                         pos_embed=False)}
for _size, _images in (("small", (224,)), ("base", (224,)), ("large", (224, 256, 336, 384)),
                       ("large2", (224, 256, 336, 384)), ("xlarge", (256, 336, 384))):
    for _image in _images:
        register_timm_model(f"vitamin_{_size}_{_image}",
                            ViTaminArch(image_size=_image, **_VIT, **_SIZES[_size]))
