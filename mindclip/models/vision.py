"""Vision Transformer image tower (CLIP's ViT-B/32, B/16, L/14, ...)."""
from __future__ import annotations

from mindspore import nn, ops

from .config import CLIPVisionCfg
from .layers import LayerNorm, Transformer, normal_param


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
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                               pad_mode="valid", has_bias=False)
        self.class_embedding = normal_param((width,), scale, "class_embedding")
        self.positional_embedding = normal_param((self.grid * self.grid + 1, width), scale,
                                                 "positional_embedding")
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = normal_param((width, embed_dim), scale, "proj")

    def patch_embed(self, x):
        """``conv1`` (kernel = stride = patch) as one matmul over flattened patches:
        (B, 3, H, W) -> (B, grid*grid, width), row-major over the grid as the convolution's
        output flattens. The same weights as the Conv2d it replaces; MindSpore 2.10's CPU
        Conv2d runs a 32x32/stride-32 kernel at ~1 GFLOP/s, a matmul at ~150."""
        b, c = x.shape[0], x.shape[1]
        g, p = self.grid, self.patch_size
        patches = x.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        weight = self.conv1.weight.reshape(self.width, c * p * p).astype(patches.dtype)
        return ops.matmul(patches, weight.T)

    def construct(self, x):
        x = self.patch_embed(x)  # (B, grid*grid, width)
        b = x.shape[0]
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, -1),
                               (b, 1, self.width))
        x = ops.concat((cls, x), axis=1)
        x = x + self.positional_embedding.astype(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        pooled = self.ln_post(x[:, 0, :])
        return ops.matmul(pooled, self.proj.astype(pooled.dtype))

