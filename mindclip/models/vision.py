"""Vision Transformer image tower (CLIP's ViT-B/32, B/16, L/14, ...)."""
from __future__ import annotations

from mindspore import nn, ops

from .config import CLIPVisionCfg
from .layers import LayerNorm, Transformer, normal_param

_matmul_nt = ops.MatMul(transpose_b=True)


class PatchEmbedding(nn.Conv2d):
    """The ViT's ``conv1`` (kernel = stride = patch, no bias), computed as one matmul over
    flattened patches: (B, 3, H, W) -> (B, grid*grid, width), row-major over the grid as the
    convolution's output flattens. Same weight and name as the Conv2d (every checkpoint
    loads), and still a Conv2d to mixed precision's cast; MindSpore 2.10's CPU Conv2d runs a
    32x32/stride-32 kernel at ~1 GFLOP/s, a matmul at ~150. The matmul is a 2-D one against
    the untransposed weight: a batched ``ops.matmul`` with a 2-D operand copies the weight
    once per image on CPU (0.3 GB for a ViT-B/32 batch of 32)."""

    def __init__(self, width: int, patch_size: int):
        super().__init__(3, width, kernel_size=patch_size, stride=patch_size, pad_mode="valid",
                         has_bias=False)
        self.width = width
        self.patch_size = patch_size

    def construct(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = x.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * p * p)
        weight = self.weight.reshape(self.width, c * p * p).astype(patches.dtype)
        return _matmul_nt(patches, weight).reshape(b, gh * gw, self.width)


class VisionTransformer(nn.Cell):
    """Patchify, prepend a class token, transformer, LayerNorm, project the class token."""

    def __init__(self, cfg: CLIPVisionCfg, embed_dim: int, quick_gelu: bool):
        super().__init__()
        width = cfg.width
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        self.grid = cfg.image_size // cfg.patch_size
        self.width = width
        scale = width ** -0.5
        self.conv1 = PatchEmbedding(width, cfg.patch_size)
        self.class_embedding = normal_param((width,), scale, "class_embedding")
        self.positional_embedding = normal_param((self.grid * self.grid + 1, width), scale,
                                                 "positional_embedding")
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = normal_param((width, embed_dim), scale, "proj")

    def construct(self, x):
        x = self.conv1(x)  # (B, grid*grid, width)
        b = x.shape[0]
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, -1),
                               (b, 1, self.width))
        x = ops.concat((cls, x), axis=1)
        x = x + self.positional_embedding.astype(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        pooled = self.ln_post(x[:, 0, :])
        return ops.matmul(pooled, self.proj.astype(pooled.dtype))

