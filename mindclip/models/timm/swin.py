"""timm's ``SwinTransformer`` (``swin_transformer.py``, v1) for the name open_clip's configs use,
``swin_base_patch4_window7_224``: a 4x4 patch embedding with a LayerNorm, four stages of
blocks that attend within 7x7 windows (every other block's windows shifted by half a window,
tokens of different regions kept apart by a -100 mask), a learned per-head relative position
bias in every window, and 2x2 patch merging (LayerNorm + Linear) between stages; a final
LayerNorm and the average over the last map. Parameter names are timm's.

Tokens stay ``(B, H*W, C)`` in row-major order between blocks. A block moves its tokens into
window order with one gather, whose index does the cyclic shift (timm's ``torch.roll``) and
the window partition at once, and back with the inverse permutation; the windows then are
plain batches of ``window * window`` tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..checkpointing import Blocks
from ..layers import LayerNorm
from .conv import ClassifierHead, ConvTrunk
from ..rng import drop_path_or_identity
from .layers import (STD, Mlp, PatchEmbed, linear, stage_drop_path_rates,
                     trunc_normal_param)
from .registry import TimmArch, register_timm_model
from .vit_relpos import relative_position_index

_MASKED = -100.0  # timm's value between tokens of different regions of a shifted window


@dataclass(frozen=True, kw_only=True)
class SwinArch(TimmArch):
    """timm ``SwinTransformer`` ``model_args``: ``patch_size``, ``window_size``, ``embed_dim``
    (doubled at every stage), blocks per stage (``depths``), heads per stage (``num_heads``),
    ``mlp_ratio``; LayerNorms with PyTorch's eps; timm's default stochastic depth 0.1."""

    embed_dim: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    patch_size: int = 4
    window_size: int = 7
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    drop_path_rate: float = 0.1

    POOLS: ClassVar[Tuple[str, ...]] = ("", "avg")

    @property
    def dims(self) -> Tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(len(self.depths)))

    @property
    def num_features(self) -> int:
        return self.dims[-1]

    @property
    def resolutions(self) -> Tuple[int, ...]:
        """Each stage's map side: the patch grid, then halved by every merging."""
        grid = self.image_size // self.patch_size
        return tuple(grid // 2 ** i for i in range(len(self.depths)))

    def trunk_class(self):
        return SwinTransformer


def window_order(size: int, window: int, shift: int) -> np.ndarray:
    """For a ``size`` x ``size`` map (row-major tokens) rolled by ``-shift`` on both axes and cut
    into ``window`` x ``window`` windows (timm's ``torch.roll`` + ``window_partition``): the
    source token of every position, windows row-major, tokens row-major within a window."""
    rows = np.arange(size).reshape(size // window, window)       # (window row, row within it)
    source = (rows + shift) % size
    r = source[:, None, :, None]                                  # (wr, wc, a, b)
    c = source[None, :, None, :]
    return (r * size + c).reshape(-1).astype(np.int32)


def shift_mask(size: int, window: int, shift: int) -> np.ndarray:
    """timm's ``attn_mask`` of a shifted block: ``(windows, N, N)``, 0 between tokens of the same
    region of the rolled map, -100 between regions (the wrapped-around edges)."""
    region = np.zeros((size, size), np.float32)
    bounds = ((0, size - window), (size - window, size - shift), (size - shift, size))
    count = 0
    for r0, r1 in bounds:
        for c0, c1 in bounds:
            region[r0:r1, c0:c1] = count
            count += 1
    windows = region.reshape(-1)[window_order(size, window, 0)].reshape(-1, window * window)
    return np.where(windows[:, None, :] != windows[:, :, None], _MASKED, 0.0).astype(np.float32)


class WindowAttention(nn.Cell):
    """timm's ``WindowAttention``: multi-head attention within each window of ``window`` x
    ``window`` tokens, ``qkv`` and ``proj`` Linears, a learned bias per head and relative
    offset (``relative_position_bias_table``), and the shifted block's region ``mask``."""

    def __init__(self, dim: int, heads: int, window: int, mask: Optional[np.ndarray] = None):
        super().__init__()
        self.heads, self.head_dim, self.tokens = heads, dim // heads, window * window
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = trunc_normal_param(((2 * window - 1) ** 2, heads), STD,
                                                               "relative_position_bias_table")
        self.index = Tensor(relative_position_index((window, window)).astype(np.int32))
        self.qkv = linear(dim, 3 * dim)
        self.proj = linear(dim, dim)
        self.masked = mask is not None
        if self.masked:
            self.mask = Tensor(mask[:, None])                     # (windows, 1, N, N)
        self.split = ops.Split(-1, 3)
        self.bmm = ops.BatchMatMul()
        self.bmm_nt = ops.BatchMatMul(transpose_b=True)
        self.softmax = ops.Softmax(-1)

    def bias(self):
        """``(windows or 1, heads, N, N)``: each head's bias for every (query, key) offset, plus
        the shifted block's mask."""
        n = self.tokens
        table = self.relative_position_bias_table
        bias = ops.gather(table, self.index, 0).reshape(1, n, n, self.heads).transpose(0, 3, 1, 2)
        return bias + self.mask if self.masked else bias

    def _heads(self, x):
        bw, n, _ = x.shape
        return x.reshape(bw, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x):
        bw, n, c = x.shape
        # q, k and v split along the columns, then each into heads: slicing the first axis of a
        # (3, windows, heads, N, d) tensor, as timm does, is 7x slower on MindSpore's CPU backend
        q, k, v = self.split(self.qkv(x))
        scores = self.bmm_nt(self._heads(q * self.scale), self._heads(k)).astype(ms.float32)
        bias = self.bias()
        # the bias repeated to the scores' shape: a same-shape add (a broadcast one over the
        # windows is 4x slower on CPU)
        scores = scores + ops.tile(bias, (bw // bias.shape[0], 1, 1, 1))
        probs = self.softmax(scores).astype(x.dtype)
        out = self.bmm(probs, self._heads(v)).transpose(0, 2, 1, 3).reshape(bw, n, c)
        return self.proj(out)


class SwinTransformerBlock(nn.Cell):
    """timm's ``SwinTransformerBlock`` on row-major tokens ``(B, size * size, dim)``:
    ``x + drop_path(attn(norm1(x)))`` in (shifted) windows, then ``x + drop_path(mlp(norm2(x)))``.
    A map no larger than the window is one window, unshifted (timm's rule)."""

    def __init__(self, arch: SwinArch, dim: int, heads: int, size: int, shifted: bool, drop_path: float):
        super().__init__()
        window = min(arch.window_size, size)
        shift = arch.window_size // 2 if shifted and size > arch.window_size else 0
        if size % window:
            raise ValueError(f"Swin: a {size}x{size} map does not split into {window}x{window} windows")
        self.window = window
        self.norm1 = LayerNorm(dim, arch.norm_eps)
        self.attn = WindowAttention(dim, heads, window, shift_mask(size, window, shift) if shift else None)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = LayerNorm(dim, arch.norm_eps)
        self.mlp = Mlp(dim, int(dim * arch.mlp_ratio), "gelu")
        self.drop_path2 = drop_path_or_identity(drop_path)
        self.windowed = window < size
        if self.windowed:
            order = window_order(size, window, shift)
            self.to_windows, self.from_windows = Tensor(order), Tensor(np.argsort(order).astype(np.int32))

    def _attn(self, x):
        b, l, c = x.shape
        if not self.windowed:
            return self.attn(x)
        windows = ops.gather(x, self.to_windows, 1).reshape(-1, self.window * self.window, c)
        return ops.gather(self.attn(windows).reshape(b, l, c), self.from_windows, 1)

    def construct(self, x):
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Cell):
    """timm's ``PatchMerging``: each 2x2 group of tokens concatenated (timm's order: (0, 0),
    (1, 0), (0, 1), (1, 1) as (row, column) offsets), ``norm``, ``reduction`` (a Linear without
    bias to twice the width)."""

    def __init__(self, dim: int, size: int, eps: float):
        super().__init__()
        if size % 2:
            raise ValueError(f"Swin: patch merging needs an even map, got {size}x{size}")
        self.size = size
        self.norm = LayerNorm(4 * dim, eps)
        self.reduction = linear(4 * dim, 2 * dim, has_bias=False)

    def construct(self, x):
        b, _, c = x.shape
        half = self.size // 2
        x = x.reshape(b, half, 2, half, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, half * half, 4 * c)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Cell):
    """timm's ``SwinTransformerStage``: ``downsample`` (patch merging, all stages but the first),
    then ``blocks``, every other one shifted."""

    def __init__(self, arch: SwinArch, index: int, rates: List[float]):
        super().__init__()
        dim, size = arch.dims[index], arch.resolutions[index]
        self.downsample = (PatchMerging(arch.dims[index - 1], arch.resolutions[index - 1], arch.norm_eps)
                           if index > 0 else nn.Identity())
        self.blocks = Blocks([
            SwinTransformerBlock(arch, dim, arch.num_heads[index], size, i % 2 == 1, rate)
            for i, rate in enumerate(rates)])

    def construct(self, x):
        return self.blocks(self.downsample(x))


class SwinPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with its ``norm`` (Swin's): patches -> tokens -> LayerNorm."""

    def __init__(self, width: int, patch_size: int, eps: float):
        super().__init__(width, patch_size, has_bias=True)
        self.norm = LayerNorm(width, eps)

    def construct(self, x):
        return self.norm(self.proj(x))


class SwinTransformer(ConvTrunk):
    """timm's ``SwinTransformer``: ``patch_embed``, ``layers`` (the stages), ``norm``, ``head``
    (average pooling). ``forward_features`` gives the last map ``(B, H, W, C)`` after ``norm``,
    as timm's does (NHWC)."""

    family = "SwinTransformer"

    def __init__(self, arch: SwinArch, global_pool: str, num_classes: int = 0,
                 pool: Optional[str] = None, drop_path: float = 0.0, patch_dropout: float = 0.0):
        super().__init__(arch, global_pool, pool, patch_dropout)
        if arch.image_size % (arch.patch_size * 2 ** (len(arch.depths) - 1)):
            raise ValueError(f"Swin: {arch.image_size}-pixel images do not halve into every stage")
        self.patch_embed = SwinPatchEmbed(arch.embed_dim, arch.patch_size, arch.norm_eps)
        self.layers = nn.SequentialCell([SwinTransformerStage(arch, i, rates) for i, rates
                                         in enumerate(stage_drop_path_rates(drop_path, arch.depths))])
        self.norm = LayerNorm(arch.num_features, arch.norm_eps)
        self.head = ClassifierHead(arch.num_features, num_classes)
        self.num_features = num_classes if num_classes > 0 else arch.num_features

    def forward_features(self, x):
        x = self.norm(self.layers(self.patch_embed(x)))
        side = self.arch.resolutions[-1]
        return x.reshape(x.shape[0], side, side, x.shape[-1])

    def lock_groups(self) -> List[list]:
        """timm's ``group_matcher`` groups: the patch embedding, then each block (a stage's
        merging shares its first block's group id), the final ``norm`` with the last block
        (timm's "previous group" id), then the classifier, if there is one."""
        groups = [[self.patch_embed]]
        for stage in self.layers:
            for i, block in enumerate(stage.blocks):
                groups.append([stage.downsample, block] if i == 0 else [block])
        groups[-1].append(self.norm)
        return groups + ([[self.head]] if list(self.head.get_parameters()) else [])


register_timm_model("swin_base_patch4_window7_224",
                    SwinArch(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)))

__all__ = ["SwinArch", "SwinTransformer"]
