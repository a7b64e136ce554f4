"""timm's ``Eva`` (``eva.py``) for the names open_clip's configs use: EVA01-g
(``eva_giant_patch14_*``: fused qkv with q/v biases), EVA02 CLIP B/L (separate q/k/v with no k
bias, 2-D RoPE rescaled to a 16x16 reference grid, SwiGLU with NormFormer's scale norm, the
attention's sub-LN), EVA02-E (residual post-norm blocks) and PE-Core T/S/B/L/bigG
(``AttentionRope``: RoPE with a grid offset of 1 and xy indexing, a LayerNorm before the
blocks, no patch bias, the MAP head with 8 heads of its own). Parameter names are timm's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from mindspore import nn, ops

from ..checkpointing import Blocks
from ..layers import LayerNorm
from ..rng import drop_path_or_identity
from .layers import (STD, Attention, GluMlp, Mlp, RotaryEmbeddingCat, SwiGLU,
                     drop_path_rates)
from .registry import TrunkArch, register_timm_model
from .trunk import ViTTrunk


@dataclass(frozen=True)
class EvaArch(TrunkArch):
    """timm ``Eva`` ``model_args``: ``attn_type`` (``eva``: no k bias; ``rope``: timm's
    ``AttentionRope``), ``qkv_fused``, ``swiglu_mlp``/``scale_mlp``/``scale_attn_inner``
    (EVA02), ``post_norm`` (EVA02-E), and the rotary embedding's ``rope`` switch,
    ``ref_grid`` (``ref_feat_shape``), ``rope_grid_offset`` and ``rope_grid_indexing``."""

    attn_type: str = "eva"
    qkv_fused: bool = True
    swiglu_mlp: bool = False
    scale_mlp: bool = False
    scale_attn_inner: bool = False
    post_norm: bool = False
    rope: bool = False
    ref_grid: Optional[Tuple[int, int]] = None
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"

    def trunk_class(self):
        return Eva


def _mlp(arch: EvaArch) -> nn.Cell:
    # EvaBlock's choice: SwiGLU when scaled, GluMlp (one fc1 of twice the width) when not
    norm_eps = arch.norm_eps if arch.scale_mlp else None
    if arch.swiglu_mlp:
        if arch.scale_mlp:
            return SwiGLU(arch.width, arch.mlp_dim, norm_eps)
        return GluMlp(arch.width, 2 * arch.mlp_dim, "silu")
    return Mlp(arch.width, arch.mlp_dim, "gelu", norm_eps)


class EvaBlock(nn.Cell):
    """timm's ``EvaBlock`` (pre-norm: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``) or
    ``EvaBlockPostNorm`` (``x + norm1(attn(x))``, ``x + norm2(mlp(x))``), same names."""

    def __init__(self, arch: EvaArch, drop_path: float = 0.0):
        super().__init__()
        w, eps = arch.width, arch.norm_eps
        self.post_norm = arch.post_norm
        self.norm1 = LayerNorm(w, eps)
        self.attn = Attention(w, arch.heads, fused=arch.qkv_fused, k_bias=arch.attn_type == "rope",
                              scale_norm=arch.scale_attn_inner, norm_eps=eps)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = LayerNorm(w, eps)
        self.mlp = _mlp(arch)
        self.drop_path2 = drop_path_or_identity(drop_path)

    def construct(self, x, cos=None, sin=None):
        # the rotary tables come as two tensors: a recomputed block takes tensors, not tuples
        rope = None if cos is None else (cos, sin)
        if self.post_norm:
            x = x + self.drop_path1(self.norm1(self.attn(x, rope)))
            return x + self.drop_path2(self.norm2(self.mlp(x)))
        x = x + self.drop_path1(self.attn(self.norm1(x), rope))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Eva(ViTTrunk):
    """timm's ``Eva``: patches, class token, learned positions, the rotary tables, patch
    dropout, ``norm_pre``, blocks, then the head of :class:`ViTTrunk`. Patch dropout keeps
    the rotary tables' rows of the kept patches, as timm's ``PatchDropoutWithIndices`` does."""

    def __init__(self, arch: EvaArch, global_pool: str, num_classes: int = 0,
                 pool: Optional[str] = None, drop_path: float = 0.0, patch_dropout: float = 0.0):
        super().__init__(arch, global_pool, pool)
        self.use_rope = arch.rope
        self._build_embed(None, cls_std=STD)
        if arch.rope:
            self.rope = RotaryEmbeddingCat(arch.grid, arch.width // arch.heads, arch.heads,
                                           arch.prefix_tokens, arch.ref_grid, arch.rope_grid_offset,
                                           arch.rope_grid_indexing)
        self.blocks = Blocks(EvaBlock(arch, rate) for rate in drop_path_rates(drop_path, arch.layers))
        if arch.rope:
            self.blocks.graph_mode_limit = ("MindSpore 2.10's recompute pass builds a cycle around the "
                                            "rotary embedding's fused backward (EVA02, PE-Core)")
        self._build_head(num_classes)
        self.set_patch_dropout(patch_dropout)

    def forward_features(self, x):
        if self.use_rope and self.training and self.patch_drop.prob > 0.0:
            x, rope = self.embed_with_rope(x)
        else:
            x = self.embed(x)
            rope = self.rope() if self.use_rope else None
        if rope is None:
            return self.norm(self.blocks(x))
        return self.norm(self.blocks(x, rope[0], rope[1]))

    def embed_with_rope(self, x):
        """:meth:`embed` under patch dropout, with each sample's rotary tables: the prefix
        rows and the kept patches' rows, ``(B, kept, D)``."""
        x = self.tokens(x)
        keep = self.patch_drop.indices(x)
        cos, sin = self.rope()
        tables = [self.patch_drop.take(ops.broadcast_to(t, (x.shape[0],) + t.shape), keep)
                  for t in (cos, sin)]
        return self.norm_pre(self.patch_drop.take(x, keep)), (tables[0], tables[1])


_CLIP02 = dict(mlp_ratio=4 * 2 / 3, qkv_fused=False, swiglu_mlp=True, scale_mlp=True,
               scale_attn_inner=True, rope=True, ref_grid=(16, 16))
_GIANT = dict(patch_size=14, width=1408, layers=40, heads=16, mlp_ratio=6144 / 1408)
for _size in (224, 336, 560):  # timm's Eva pools by the average unless told otherwise
    register_timm_model(f"eva_giant_patch14_{_size}", EvaArch(image_size=_size, global_pool="avg", **_GIANT))
register_timm_model("eva_giant_patch14_clip_224", EvaArch(image_size=224, **_GIANT))
register_timm_model("eva02_base_patch16_clip_224",
                    EvaArch(patch_size=16, width=768, layers=12, heads=12, **_CLIP02))
for _size in (224, 336):
    register_timm_model(f"eva02_large_patch14_clip_{_size}",
                        EvaArch(patch_size=14, width=1024, layers=24, heads=16, image_size=_size, **_CLIP02))
register_timm_model("eva02_enormous_patch14_clip_224",
                    EvaArch(patch_size=14, width=1792, layers=64, heads=16, mlp_ratio=15360 / 1792,
                            post_norm=True))

_PE = dict(global_pool="map", attn_type="rope", pre_norm=True, rope=True, rope_grid_offset=1.0,
           rope_grid_indexing="xy", pool_heads=8, pool_mlp_ratio=4.0, norm_eps=1e-5)
for _name, _patch, _width, _depth, _heads, _size, _ref, _extra in (
        ("vit_pe_core_tiny_patch16_384", 16, 192, 12, 3, 384, 24, {}),
        ("vit_pe_core_small_patch16_384", 16, 384, 12, 6, 384, 24, {}),
        ("vit_pe_core_base_patch16_224", 16, 768, 12, 12, 224, 14, {}),
        ("vit_pe_core_large_patch14_336", 14, 1024, 24, 16, 336, 24, {}),
        ("vit_pe_core_gigantic_patch14_448", 14, 1536, 50, 16, 448, 32,
         dict(mlp_ratio=8960 / 1536, class_token=False, rope_grid_offset=0.0))):
    register_timm_model(_name, EvaArch(patch_size=_patch, width=_width, layers=_depth, heads=_heads,
                                       image_size=_size, ref_grid=(_ref, _ref),
                                       **dict(_PE, **_extra)))
