"""What timm's ViT-shaped trunks (``VisionTransformer``, ``Eva``) share around their blocks:
the embedding (patches, class token, positions, patch dropout, ``norm_pre``), the classifier
head timm builds from ``global_pool`` and ``num_classes`` (the MAP head ``attn_pool``,
``fc_norm``, ``head``) and the layer groups."""
from __future__ import annotations

from typing import List, Optional

from mindspore import nn, ops

from ..layers import LayerNorm
from ..patch import PatchDropout
from .layers import (STD, AttentionPoolLatent, PatchEmbed, linear, norm_or_identity, pool_tokens,
                     trunc_normal_param)
from .registry import TrunkArch


class ViTTrunk(nn.Cell):
    """A timm ViT-shaped trunk: subclasses call :meth:`_build_embed`, build ``blocks``, call
    :meth:`_build_head`, and define :meth:`forward_features` (:meth:`embed`, blocks, ``norm``);
    the head is built as timm builds it:

    - ``global_pool`` (what the trunk is built with) decides ``fc_norm``: after pooling for
      ``avg``, else the final ``norm`` on every token (unless the arch says otherwise);
    - ``pool`` (what it pools with, open_clip's ``reset_classifier``; default
      ``global_pool``): ``map`` keeps the MAP head ``attn_pool`` (only when built with it),
      ``token`` the class token, ``avg`` the mean of the patch tokens, ``''`` every token;
    - ``num_classes`` > 0 adds timm's ``head``, a Linear to that width (open_clip's
      ``timm_proj: null`` uses it as the projection).
    """

    def __init__(self, arch: TrunkArch, global_pool: str, pool: Optional[str] = None):
        super().__init__()
        pool = global_pool if pool is None else pool
        for what, value in (("global_pool", global_pool), ("pool", pool)):
            if value not in arch.POOLS:
                raise ValueError(f"timm trunk {what} {value!r} is not one of {list(arch.POOLS)}")
        if "token" in (global_pool, pool) and not arch.class_token:
            raise ValueError("token pooling needs the class token, which this timm model has not")
        if pool == "map" and global_pool != "map":
            raise ValueError("timm cannot add attention pooling to a trunk built without it "
                             f"(built with global_pool {global_pool!r})")
        self.arch = arch
        self.pool = pool
        self.prefix_tokens = arch.prefix_tokens
        self.use_fc_norm = arch.fc_norm if arch.fc_norm is not None else global_pool == "avg"
        self.patch_drop = PatchDropout(0.0, arch.prefix_tokens)  # set_patch_dropout sets it

    def _build_embed(self, patch_embed: Optional[nn.Cell], cls_std: float) -> None:
        """``patch_embed`` (timm's ``PatchEmbed`` unless given: a conv stem), ``cls_token``,
        ``pos_embed`` (over the class token too unless ``no_embed_class``; none for relative
        positions), ``norm_pre``."""
        arch = self.arch
        rows, cols = arch.grid
        self.patch_embed = patch_embed or PatchEmbed(arch.width, arch.patch_size, has_bias=not arch.pre_norm)
        if arch.class_token:
            self.cls_token = trunc_normal_param((1, 1, arch.width), cls_std, "cls_token")
        if arch.pos_embed:
            positions = rows * cols + (0 if arch.no_embed_class else arch.prefix_tokens)
            self.pos_embed = trunc_normal_param((1, positions, arch.width), STD, "pos_embed")
        self.norm_pre = norm_or_identity(arch.width, arch.norm_eps, arch.pre_norm)

    def embed(self, x):
        """Image -> tokens before the blocks: patches, positions, class token, patch dropout,
        ``norm_pre``."""
        return self.norm_pre(self.patch_drop(self.tokens(x)))

    def tokens(self, x):
        """Image -> patch tokens with their positions and the class token."""
        x = self.patch_embed(x)
        if not self.arch.pos_embed:
            return self.prefix(x)
        if self.arch.no_embed_class:  # positions for the patches, then the class token
            return self.prefix(x + self.pos_embed.astype(x.dtype))
        return self.prefix(x) + self.pos_embed.astype(x.dtype)

    def _build_head(self, num_classes: int) -> None:
        # after the subclass built its blocks, so that parameter order follows timm's
        arch = self.arch
        self.norm = LayerNorm(arch.width, arch.norm_eps) if not self.use_fc_norm else nn.Identity()
        if self.pool == "map":
            self.attn_pool = AttentionPoolLatent(arch.width, arch.pool_heads or arch.heads,
                                                 arch.pool_mlp_ratio or arch.mlp_ratio,
                                                 arch.pool_act, arch.norm_eps)
        self.fc_norm = LayerNorm(arch.width, arch.norm_eps) if self.use_fc_norm else nn.Identity()
        self.head = linear(arch.width, num_classes) if num_classes > 0 else nn.Identity()
        self.num_features = num_classes if num_classes > 0 else arch.width

    def prefix(self, x):
        """The patch tokens ``(B, N, width)`` with the class token prepended (if any)."""
        if not self.arch.class_token:
            return x
        cls = ops.broadcast_to(self.cls_token.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
        return ops.concat((cls, x), axis=1)

    def forward_head(self, x):
        if self.pool == "map":
            x = self.attn_pool(x)
        else:
            x = pool_tokens(x, self.pool, self.prefix_tokens)
        return self.head(self.fc_norm(x))

    def forward_tokens(self, x):
        """``(pooled features, token features after the final norm)``."""
        tokens = self.forward_features(x)
        return self.forward_head(tokens), tokens

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def lock_groups(self) -> List[list]:
        """timm's layer groups (``group_matcher``): the stem (patch embedding, prefix tokens,
        positions, ``norm_pre``), each block, then the rest (final norm and head)."""
        stem = [self.patch_embed] + [getattr(self, n) for n in ("cls_token", "pos_embed")
                                     if getattr(self, n, None) is not None]
        stem.append(self.norm_pre)
        rest = [self.norm, self.fc_norm, self.head] + ([self.attn_pool] if self.pool == "map" else [])
        return [stem] + [[b] for b in self.blocks] + [rest]

    def set_patch_dropout(self, prob: float) -> None:
        self.patch_drop = PatchDropout(prob, self.patch_drop.prefix_tokens).set_train(self.training)
