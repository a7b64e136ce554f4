"""timm's ``VisionTransformer`` (``vision_transformer.py``) for the names open_clip's configs
use: SigLIP's and SigLIP 2's ViTs (no class token, the MAP head), the CLIP ViT-L/14 of
MobileCLIP2-L-14 (``pre_norm``, no patch bias, class token), ViT-medium with global average
pooling and LayerScale, and MobileCLIP's MCi ViT (``vision_transformer_hybrid.py``: a
convolutional stem instead of the patch embedding, positions not over the class token). Parameter names are timm's (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``norm_pre``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,
ls2}``, ``norm``, ``attn_pool``, ``fc_norm``, ``head``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from mindspore import nn

from ..checkpointing import Blocks
from ..layers import LayerNorm, LayerScale, make_activation
from ..patch import PatchEmbedding
from ..rng import drop_path_or_identity
from .layers import Attention, Mlp, drop_path_rates
from .registry import TrunkArch, register_timm_model
from .trunk import ViTTrunk


@dataclass(frozen=True)
class ViTArch(TrunkArch):
    """timm ``VisionTransformer`` ``model_args`` beyond :class:`TrunkArch`'s: ``act``
    (``gelu``/``gelu_tanh``), ``qkv_bias``, ``init_values`` (LayerScale), and a convolutional stem (``stem``: its stages' widths, ``stem_strides``
    their kernels = strides; ``patch_size`` is then their product, the stem's total stride)."""

    act: str = "gelu"
    qkv_bias: bool = True
    init_values: Optional[float] = None
    stem: Tuple[int, ...] = ()
    stem_strides: Tuple[int, ...] = ()

    @property
    def pool_act(self) -> str:
        return self.act

    def trunk_class(self):
        return VisionTransformer


class ConvNormAct(nn.Cell):
    """One stage of timm's ``ConvStem``: ``conv`` (kernel = stride) then ``bn`` (BatchNorm)
    and GELU, or, for the last stage, the convolution with a bias alone. Maps stay channels
    last, so each stage is one matmul over its patches."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, last: bool):
        super().__init__()
        self.conv = PatchEmbedding(out_channels, stride, has_bias=last, in_channels=in_channels)
        self.last = last
        if not last:
            self.bn = nn.BatchNorm1d(out_channels, eps=1e-5, momentum=0.9)
            self.act = make_activation("gelu")

    def channels_first(self, x):
        """The stem's first stage, on the image (B, 3, H, W)."""
        b, _, h, w = x.shape
        p = self.conv.patch_size
        return self.norm_act(self.conv(x).reshape(b, h // p, w // p, self.conv.width))

    def construct(self, x):
        return self.norm_act(self.conv.channels_last(x))

    def norm_act(self, x):
        if self.last:
            return x
        b, h, w, c = x.shape
        return self.act(self.bn(x.reshape(b * h * w, c))).reshape(b, h, w, c)


class HybridEmbed(nn.Cell):
    """timm's ``HybridEmbed`` with ``proj=False`` over a ``ConvStem`` (``backbone``): the
    stem's last map, flattened row-major, is the token sequence (MobileCLIP's MCi)."""

    def __init__(self, arch: "ViTArch"):
        super().__init__()
        widths = (3,) + tuple(arch.stem)
        self.backbone = nn.CellList([
            ConvNormAct(widths[i], widths[i + 1], stride, i == len(arch.stem) - 1)
            for i, stride in enumerate(arch.stem_strides)])

    def construct(self, x):
        for i, stage in enumerate(self.backbone):
            x = stage.channels_first(x) if i == 0 else stage(x)
        b, h, w, c = x.shape
        return x.reshape(b, h * w, c)


class Block(nn.Cell):
    """timm's pre-norm ``Block``: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``
    (``RelPosBlock`` when the attention has a relative position bias ``rel_pos``)."""

    def __init__(self, arch: ViTArch, drop_path: float = 0.0, rel_pos: Optional[nn.Cell] = None,
                 mlp: Optional[nn.Cell] = None):
        super().__init__()
        w, eps = arch.width, arch.norm_eps
        scaled = arch.init_values is not None
        self.norm1 = LayerNorm(w, eps)
        self.attn = Attention(w, arch.heads, qkv_bias=arch.qkv_bias, norm_eps=eps, rel_pos=rel_pos)
        self.ls1 = LayerScale(w, arch.init_values) if scaled else nn.Identity()
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = LayerNorm(w, eps)
        self.mlp = mlp if mlp is not None else Mlp(w, arch.mlp_dim, arch.act)
        self.ls2 = LayerScale(w, arch.init_values) if scaled else nn.Identity()
        self.drop_path2 = drop_path_or_identity(drop_path)

    def construct(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(ViTTrunk):
    """timm's ``VisionTransformer``: patches, class token, learned positions (over the class
    token too), patch dropout, ``norm_pre``, blocks, then the head of :class:`ViTTrunk`."""

    def __init__(self, arch: ViTArch, global_pool: str, num_classes: int = 0,
                 pool: Optional[str] = None, drop_path: float = 0.0, patch_dropout: float = 0.0):
        super().__init__(arch, global_pool, pool)
        self._build_embed(self._patch_embed(arch), cls_std=1e-6)
        self.blocks = Blocks(self._block(arch, rate) for rate in drop_path_rates(drop_path, arch.layers))
        self._build_head(num_classes)
        self.set_patch_dropout(patch_dropout)

    @staticmethod
    def _patch_embed(arch: ViTArch) -> Optional[nn.Cell]:
        """The embedding a subclass puts before the blocks (None: timm's ``PatchEmbed``)."""
        return HybridEmbed(arch) if arch.stem else None

    @staticmethod
    def _block(arch: ViTArch, drop_path: float) -> nn.Cell:
        return Block(arch, drop_path)

    def forward_features(self, x):
        return self.norm(self.blocks(self.embed(x)))


_B = dict(width=768, layers=12, heads=12)
_L = dict(width=1024, layers=24, heads=16)
_SO400M = dict(width=1152, layers=27, heads=16, mlp_ratio=3.7362)
_GOPT = dict(width=1536, layers=40, heads=16)
_TANH = dict(act="gelu_tanh")
_SIGLIP = dict(class_token=False, global_pool="map")

for _name, _patch, _size, _dims in (
        ("vit_base_patch32_siglip_256", 32, 256, dict(_B, **_TANH)),
        ("vit_base_patch16_siglip_224", 16, 224, _B),
        ("vit_base_patch16_siglip_256", 16, 256, _B),
        ("vit_base_patch16_siglip_384", 16, 384, _B),
        ("vit_base_patch16_siglip_512", 16, 512, _B),
        ("vit_large_patch16_siglip_256", 16, 256, _L),
        ("vit_large_patch16_siglip_384", 16, 384, _L),
        ("vit_large_patch16_siglip_512", 16, 512, dict(_L, **_TANH)),
        ("vit_so400m_patch14_siglip_224", 14, 224, _SO400M),
        ("vit_so400m_patch14_siglip_378", 14, 378, _SO400M),
        ("vit_so400m_patch14_siglip_384", 14, 384, _SO400M),
        ("vit_so400m_patch16_siglip_256", 16, 256, dict(_SO400M, **_TANH)),
        ("vit_so400m_patch16_siglip_384", 16, 384, dict(_SO400M, **_TANH)),
        ("vit_so400m_patch16_siglip_512", 16, 512, dict(_SO400M, **_TANH)),
        ("vit_giantopt_patch16_siglip_256", 16, 256, dict(_GOPT, **_TANH)),
        ("vit_giantopt_patch16_siglip_384", 16, 384, dict(_GOPT, **_TANH))):
    register_timm_model(_name, ViTArch(patch_size=_patch, image_size=_size, **_SIGLIP, **_dims))

# MobileCLIP2-L-14's image tower: OpenAI's ViT-L/14 layout (pre-norm, LayerNorm eps 1e-5)
register_timm_model("vit_large_patch14_clip_224",
                    ViTArch(patch_size=14, pre_norm=True, norm_eps=1e-5, **_L))
register_timm_model("vit_medium_patch16_gap_256",
                    ViTArch(patch_size=16, width=512, layers=12, heads=8, image_size=256,
                            class_token=False, global_pool="avg", qkv_bias=False, init_values=1e-6,
                            fc_norm=False))

# MobileCLIP-B / MobileCLIP2-B: ViT-B/16-sized blocks over a 3-stage conv stem of stride 16
register_timm_model("vit_base_mci_224",
                    ViTArch(patch_size=16, no_embed_class=True, stem=(192, 192, 768),
                            stem_strides=(4, 2, 2), **_B))
