"""timm's Vision Transformer as open_clip wraps it for SigLIP (``TimmModel``): the ``trunk``
(timm's ``VisionTransformer``: patch embedding with bias, no class token, learned positions,
pre-norm blocks, final norm, the MAP head ``attn_pool``) and the ``head`` (open_clip's
projection, empty for ``timm_proj: none``). Parameter names are timm's and open_clip's, with
MindSpore's suffixes for norms (``gamma``/``beta``), so the converters only rename suffixes.
"""
from __future__ import annotations

from typing import List

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from .config import TimmVisionCfg
from .layers import Dense, LayerNorm, PackedSelfAttention, PerHeadAttention, make_activation
from .timm_archs import TimmViTArch
from .vision import PatchEmbedding

_STD = 0.02  # timm's init of Linear weights and the position table


def _linear(in_dim: int, out_dim: int, has_bias: bool = True) -> Dense:
    return Dense(in_dim, out_dim, weight_init=TruncatedNormal(_STD), bias_init="zeros",
                    has_bias=has_bias)


class Mlp(nn.Cell):
    """timm's ``Mlp``: ``fc2(act(fc1(x)))``."""

    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = _linear(width, hidden)
        self.act = make_activation(act)
        self.fc2 = _linear(hidden, width)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(PackedSelfAttention):
    """timm's ``Attention``: packed ``qkv`` with bias, then ``proj``."""

    def __init__(self, width: int, heads: int):
        super().__init__(width, heads)
        self.qkv = _linear(width, 3 * width)
        self.proj = _linear(width, width)

    def construct(self, x):
        return self.proj(self.attend(self.qkv(x)))


class Block(nn.Cell):
    """timm's pre-norm ``Block``: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, arch: TimmViTArch):
        super().__init__()
        self.norm1 = LayerNorm(arch.width, arch.norm_eps)
        self.attn = Attention(arch.width, arch.heads)
        self.norm2 = LayerNorm(arch.width, arch.norm_eps)
        self.mlp = Mlp(arch.width, arch.mlp_dim, arch.act)

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentionPoolLatent(nn.Cell):
    """timm's MAP head (``AttentionPoolLatent``, SigLIP's pooling): one learned ``latent``
    query attends to every token (``q``; packed ``kv``; ``proj``), then
    ``x + mlp(norm(x))``; the query's output is the pooled feature ``(B, width)``."""

    def __init__(self, arch: TimmViTArch):
        super().__init__()
        width = arch.width
        self.width = width
        self.latent = Parameter(initializer(TruncatedNormal(width ** -0.5), (1, 1, width), ms.float32),
                                name="latent")
        self.q = _linear(width, width)
        self.kv = _linear(width, 2 * width)
        self.proj = _linear(width, width)
        self.norm = LayerNorm(width, arch.norm_eps)
        self.mlp = Mlp(width, arch.mlp_dim, arch.act)
        self.core = PerHeadAttention(arch.heads, width // arch.heads)
        self.split_kv = ops.Split(axis=-1, output_num=2)
        self.no_mask = ms.Tensor(0.0, ms.float32)

    def construct(self, x):
        b = x.shape[0]
        q = self.q(ops.broadcast_to(self.latent.astype(x.dtype), (b, 1, self.width)))
        k, v = self.split_kv(self.kv(x))
        x = self.proj(self.core(q, k, v, self.no_mask))
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


class _PatchEmbed(nn.Cell):
    # timm's module holding the convolution as ``proj``
    def __init__(self, width: int, patch_size: int):
        super().__init__()
        self.proj = PatchEmbedding(width, patch_size, has_bias=True)

    def construct(self, x):
        return self.proj(x)


class TimmViT(nn.Cell):
    """timm's ``VisionTransformer`` for ``class_token=False, global_pool='map'``: patches +
    positions, blocks, ``norm``, ``attn_pool``; :meth:`forward_tokens` also returns the
    normed tokens."""

    def __init__(self, arch: TimmViTArch):
        super().__init__()
        if arch.class_token or arch.global_pool != "map":
            raise ValueError("only timm's SigLIP ViTs (no class token, MAP pooling) are implemented")
        grid = arch.image_size // arch.patch_size
        self.patch_embed = _PatchEmbed(arch.width, arch.patch_size)
        self.pos_embed = Parameter(initializer(TruncatedNormal(_STD), (1, grid * grid, arch.width),
                                               ms.float32), name="pos_embed")
        self.blocks = nn.CellList([Block(arch) for _ in range(arch.layers)])
        self.norm = LayerNorm(arch.width, arch.norm_eps)
        self.attn_pool = AttentionPoolLatent(arch)

    def forward_tokens(self, x):
        x = self.patch_embed(x)
        x = x + self.pos_embed.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.attn_pool(x), x

    def construct(self, x):
        return self.forward_tokens(x)[0]


class _Head(nn.Cell):
    # open_clip's head Sequential: dropout (p=0 here) and ``proj``
    def __init__(self, width: int, embed_dim: int, has_bias: bool):
        super().__init__()
        self.proj = _linear(width, embed_dim, has_bias)

    def construct(self, x):
        return self.proj(x)


class TimmImageTower(nn.Cell):
    """open_clip's ``TimmModel`` around a timm ViT: ``trunk`` then ``head`` (``head.proj``,
    a Linear to ``embed_dim``, for ``timm_proj: linear``; nothing for ``none``)."""

    def __init__(self, cfg: TimmVisionCfg, embed_dim: int):
        super().__init__()
        arch = cfg.arch
        self.image_size = cfg.image_size
        self.trunk = TimmViT(arch)
        if cfg.timm_proj == "linear":
            self.head = _Head(arch.width, embed_dim, cfg.timm_proj_bias)
        elif arch.width != embed_dim:
            raise ValueError(f"timm_proj: none needs embed_dim == the tower's width "
                             f"({embed_dim} != {arch.width})")
        else:
            self.head = nn.Identity()

    def forward_with_tokens(self, x):
        """``(pooled features (B, embed_dim), token features (B, N, width))``."""
        pooled, tokens = self.trunk.forward_tokens(x)
        return self.head(pooled), tokens

    def construct(self, x):
        return self.head(self.trunk(x))

    def lock_groups(self) -> List[list]:
        """timm's layer groups of the trunk (``group_matcher``): stem (patch embedding,
        positions), each block, then the rest (final norm, MAP head). open_clip locks only the
        trunk; the projection head stays trainable."""
        trunk = self.trunk
        return ([[trunk.patch_embed, trunk.pos_embed]] + [[b] for b in trunk.blocks]
                + [[trunk.norm, trunk.attn_pool]])
