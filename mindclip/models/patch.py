"""What a ViT does to an image before its blocks, shared by open_clip's ViT and timm's
trunks: the patch embedding as one matmul, MAE's fixed 2-D sine-cosine positions, FLIP's
patch dropout."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from .layers import BiasAdd
from .rng import Stochastic

_matmul_nt = ops.MatMul(transpose_b=True)


class PatchEmbedding(nn.Conv2d):
    """The ViT's ``conv1`` (kernel = stride = patch, no bias), computed as one matmul over
    flattened patches: (B, 3, H, W) -> (B, grid*grid, width), row-major over the grid as the
    convolution's output flattens. Same weight and name as the Conv2d (every checkpoint
    loads), and still a Conv2d to mixed precision's cast; MindSpore 2.10's CPU Conv2d runs a
    32x32/stride-32 kernel at ~1 GFLOP/s, a matmul at ~150. The matmul is a 2-D one against
    the untransposed weight: a batched ``ops.matmul`` with a 2-D operand copies the weight
    once per image on CPU (0.3 GB for a ViT-B/32 batch of 32)."""

    def __init__(self, width: int, patch_size: int, has_bias: bool = False, in_channels: int = 3):
        super().__init__(in_channels, width, kernel_size=patch_size, stride=patch_size,
                         pad_mode="valid", has_bias=has_bias)
        self.width = width
        self.patch_size = patch_size
        self.add_bias = BiasAdd()

    def channels_last(self, x):
        """The same convolution on a channels-last map: (B, H, W, C) -> (B, H/p, W/p, width)
        (a conv stem's later stages, ConvNeXt's downsampling, whose maps stay channels last).
        The patches are laid out (row, column, channel), the weight permuted to match: moving
        whole rows of ``p * C`` values is a fraction of the cost of moving single values."""
        b, h, w, c = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = x.reshape(b, gh, p, gw, p * c).transpose(0, 1, 3, 2, 4).reshape(b * gh * gw, p * p * c)
        weight = self.weight.transpose(0, 2, 3, 1).reshape(self.width, p * p * c)
        out = _matmul_nt(patches, weight.astype(patches.dtype))
        if self.has_bias:
            out = self.add_bias(out, self.bias.astype(out.dtype))
        return out.reshape(b, gh, gw, self.width)

    def construct(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        if h != gh * p or w != gw * p:  # a strided conv ignores the remainder (SO400M/14 at 384)
            x = x[:, :, :gh * p, :gw * p]
        patches = x.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * p * p)
        weight = self.weight.reshape(self.width, c * p * p).astype(patches.dtype)
        out = _matmul_nt(patches, weight)
        if self.has_bias:  # timm's patch embedding (SigLIP) has one
            out = self.add_bias(out, self.bias.astype(out.dtype))
        return out.reshape(b, gh * gw, self.width)


def sincos_2d_position_embedding(width: int, grid: int) -> np.ndarray:
    """The fixed 2-D sine-cosine position table of MAE (open_clip's ``sin_cos_2d``):
    ``(grid*grid + 1, width)``, a zero row for the class token first; half the channels
    encode the row, half the column, each as sines then cosines of geometric frequencies."""
    if width % 4:
        raise ValueError(f"sin_cos_2d position embedding needs a width divisible by 4, got {width}")
    omega = 1.0 / 10000 ** (np.arange(width // 4, dtype=np.float64) / (width / 4))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                             indexing="ij")

    def encode(pos):
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    # MAE's meshgrid puts the column index first: its "h" half encodes columns
    table = np.concatenate([encode(cols), encode(rows)], axis=1)
    return np.concatenate([np.zeros((1, width)), table], axis=0).astype(np.float32)


class PatchDropout(Stochastic):
    """FLIP's patch dropout (open_clip's ``PatchDropout``): in training, each image keeps a
    random ``max(1, int(n * (1 - prob)))`` of its ``n`` patch tokens (those with the largest
    of ``n`` independent draws, in that order: open_clip draws normal numbers, this uniform
    ones, the same distribution of kept tokens) after the ``prefix_tokens`` (the class token;
    none for timm's SigLIP ViTs); inference keeps all. A tower changes ``prob`` before a run
    compiles (``runner.force_patch_dropout``) by building a new one."""

    def __init__(self, prob: float, prefix_tokens: int = 1):
        super().__init__(active=prob > 0.0)
        self.prob = float(prob)
        self.prefix_tokens = prefix_tokens

    def construct(self, x):
        if not self.training or self.prob == 0.0:
            return x
        return self.take(x, self.indices(x))

    def indices(self, x):
        """Which patch tokens of ``x`` ``(B, L, D)`` a training step keeps: ``(B, count)``."""
        return self.indices_of(self.uniform((x.shape[0], x.shape[1] - self.prefix_tokens)))

    def indices_of(self, noise):
        """The patch tokens with the largest ``noise`` ``(B, n)``."""
        count = max(1, int(noise.shape[1] * (1 - self.prob)))
        return ops.topk(noise, count)[1].astype(ms.int32)

    def take(self, x, index):
        """The prefix tokens and the patch tokens ``index`` of ``x`` ``(B, L, D)``; also any
        per-token table laid out as the tokens (timm applies the same indices to RoPE's)."""
        b, _, d = x.shape
        p = self.prefix_tokens
        count = index.shape[1]
        patches = ops.gather_elements(x[:, p:], 1, ops.broadcast_to(index.reshape(b, count, 1),
                                                                     (b, count, d)))
        return ops.concat((x[:, :p], patches), axis=1) if p else patches

    def keep(self, x, noise):
        """The prefix tokens and the patch tokens with the largest ``noise`` ``(B, n)``."""
        return self.take(x, self.indices_of(noise))
