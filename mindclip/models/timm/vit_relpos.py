"""timm's ``VisionTransformerRelPos`` (``vision_transformer_relpos.py``) for the name open_clip's
configs use, ``vit_relpos_medium_patch16_cls_224``: no absolute positions; every block's
attention adds a per-head bias computed by a small MLP (``RelPosMlp``, Swin V2's idea in timm's
``cr`` mode) from the log-scaled offsets between patches, the class token unbiased; LayerScale
on both branches. Parameter names are timm's (``blocks.N.attn.rel_pos.mlp.fc1/fc2``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from mindspore import Tensor, nn, ops

from .layers import Mlp
from .registry import register_timm_model
from .vit import Block, ViTArch, VisionTransformer


def relative_position_index(grid: Tuple[int, int]) -> np.ndarray:
    """timm's ``gen_relative_position_index``: for every (query, key) pair of patches
    (row-major), the row of the ``(2 * rows - 1) * (2 * cols - 1)`` offset table."""
    rows, cols = grid
    coords = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    return ((rel[..., 0] + rows - 1) * (2 * cols - 1) + rel[..., 1] + cols - 1).reshape(-1)


def relative_log_coords(grid: Tuple[int, int]) -> np.ndarray:
    """timm's ``gen_relative_log_coords`` in ``cr`` mode: every (row, column) offset as
    ``sign(d) * log(1 + |d|)``, shape ``(2 * rows - 1, 2 * cols - 1, 2)``, float32."""
    rows, cols = grid
    axes = [np.arange(-(n - 1), n).astype(np.float32) for n in (rows, cols)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return (np.sign(coords) * np.log(np.float32(1.0) + np.abs(coords))).astype(np.float32)


class RelPosMlp(nn.Cell):
    """timm's ``RelPosMlp`` (``mode='cr'``): ``mlp`` (2 -> hidden, ReLU, dropout 0.125 in
    training -> heads) over the offset table, gathered into a ``(heads, L, L)`` bias, zero
    rows and columns for the prefix tokens."""

    def __init__(self, grid: Tuple[int, int], heads: int, hidden: int, prefix_tokens: int):
        super().__init__()
        self.heads, self.prefix_tokens = heads, prefix_tokens
        self.tokens = grid[0] * grid[1]
        self.mlp = Mlp(2, hidden, "relu", out_dim=heads, drop=0.125)
        self.coords = Tensor(relative_log_coords(grid).reshape(-1, 2))
        self.index = Tensor(relative_position_index(grid).astype(np.int32))

    def construct(self):
        n = self.tokens
        table = self.mlp(self.coords)                                   # (offsets, heads)
        bias = ops.gather(table, self.index, 0).reshape(n, n, self.heads).transpose(2, 0, 1)
        if self.prefix_tokens:
            bias = ops.pad(bias, (self.prefix_tokens, 0, self.prefix_tokens, 0))
        return bias


@dataclass(frozen=True)
class RelPosArch(ViTArch):
    """timm ``VisionTransformerRelPos`` ``model_args``: a ``RelPosMlp`` of ``rel_pos_dim``
    hidden units in every block, no absolute positions, LayerScale from ``init_values``."""

    rel_pos_dim: int = 128
    pos_embed: bool = False
    init_values: Optional[float] = 1e-6

    def trunk_class(self):
        return VisionTransformerRelPos


class VisionTransformerRelPos(VisionTransformer):
    """timm's ``VisionTransformerRelPos``: :class:`VisionTransformer` with ``RelPosBlock``s.
    timm gives it no patch dropout, so neither does this."""

    @staticmethod
    def _block(arch: RelPosArch, drop_path: float) -> nn.Cell:
        return Block(arch, drop_path, RelPosMlp(arch.grid, arch.heads, arch.rel_pos_dim, arch.prefix_tokens))

    def set_patch_dropout(self, prob: float) -> None:
        if prob:
            raise ValueError("timm's relative-position ViTs (VisionTransformerRelPos) have no patch "
                             "dropout; set patch_dropout to 0")
        super().set_patch_dropout(prob)


register_timm_model("vit_relpos_medium_patch16_cls_224",
                    RelPosArch(patch_size=16, width=512, layers=12, heads=8, qkv_bias=False,
                               fc_norm=False, rel_pos_dim=256, class_token=True, global_pool="token"))
