"""open_clip's ``TimmModel``: any timm trunk of this package plus one head, chosen by
``timm_pool`` and ``timm_proj`` as open_clip chooses them:

- ``timm_proj`` ``linear`` or ``mlp``: the trunk is built with its own default pooling and no
  classifier, re-pooled by ``timm_pool`` when set (``''`` keeps the trunk's default), then
  open_clip's ``head``: ``drop`` + ``proj`` (a Linear, ``timm_proj_bias``) or ``mlp`` (timm's
  ``Mlp`` to twice ``embed_dim`` and back);
- ``timm_proj`` ``none``: the trunk is built pooled by ``timm_pool``, its pooled width must be
  ``embed_dim``; ``null`` (open_clip 3.3): the trunk's own classifier ``trunk.head`` is the
  projection to ``embed_dim``.
"""
from __future__ import annotations

from typing import List

from mindspore import nn

from ..rng import dropout_or_identity
from .conv import BatchNorm
from .layers import Mlp, linear


class _LinearHead(nn.Cell):
    # open_clip's head Sequential(drop, proj)
    def __init__(self, width: int, embed_dim: int, has_bias: bool, drop: float):
        super().__init__()
        self.drop = dropout_or_identity(drop)
        self.proj = linear(width, embed_dim, has_bias)

    def construct(self, x):
        return self.proj(self.drop(x))


class _MlpHead(nn.Cell):
    # open_clip's head Sequential(mlp): timm's Mlp with GELU, hidden 2 * embed_dim
    def __init__(self, width: int, embed_dim: int, has_bias: bool):
        super().__init__()
        self.mlp = Mlp(width, 2 * embed_dim, "gelu", out_dim=embed_dim, bias=(True, has_bias))

    def construct(self, x):
        return self.mlp(x)


class TimmImageTower(nn.Cell):
    """open_clip's ``TimmModel``: ``trunk`` (a timm trunk under timm's names) then ``head``.
    Capabilities the model asks of its tower: :meth:`set_patch_dropout`, :meth:`lock_groups`,
    ``keeps_eval_when_locked`` (a trunk with BatchNorm, MobileCLIP's conv stem, keeps its
    statistics when locked)."""

    def __init__(self, cfg, embed_dim: int):
        super().__init__()
        arch = cfg.arch
        self.image_size = cfg.image_size
        pool, proj = cfg.timm_pool, cfg.timm_proj
        trunk_class = arch.trunk_class()
        drop_path = arch.drop_path_rate if cfg.timm_drop_path is None else cfg.timm_drop_path
        options = dict(drop_path=drop_path, patch_dropout=cfg.patch_dropout)
        if proj in ("linear", "mlp"):
            self.trunk = trunk_class(arch, arch.global_pool, 0, pool or None, **options)
            if proj == "linear":
                self.head = _LinearHead(arch.num_features, embed_dim, cfg.timm_proj_bias, cfg.timm_drop)
            else:
                self.head = _MlpHead(arch.num_features, embed_dim, cfg.timm_proj_bias)
        else:
            if not pool:
                raise ValueError("timm_pool '' with timm_proj none/null leaves the trunk unpooled: "
                                 "its output would be every token, not an embedding")
            self.trunk = trunk_class(arch, pool, embed_dim if proj is None else 0, **options)
            if proj == "none" and arch.num_features != embed_dim:
                raise ValueError(f"timm_proj: none needs embed_dim == the tower's width "
                                 f"({embed_dim} != {arch.num_features})")
            self.head = nn.Identity()
        self.keeps_eval_when_locked = any(isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm))
                                          for _, cell in self.trunk.cells_and_names())

    def forward_with_tokens(self, x):
        """``(pooled features (B, embed_dim), token features (B, N, width))``."""
        pooled, tokens = self.trunk.forward_tokens(x)
        return self.head(pooled), tokens

    def construct(self, x):
        return self.head(self.trunk(x))

    def lock_groups(self) -> List[list]:
        """The trunk's layer groups (timm's ``group_matcher``); open_clip locks only the
        trunk, the projection head stays trainable."""
        return self.trunk.lock_groups()

    def set_patch_dropout(self, prob: float) -> None:
        self.trunk.set_patch_dropout(prob)
