"""Vision Transformer image tower (CLIP's ViT-B/32, B/16, L/14, ...)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from .config import CLIPVisionCfg
from .layers import LayerNorm, Transformer, normal_param
from .pooling import AttentionalPooler, VisionPool

_matmul_nt = ops.MatMul(transpose_b=True)


class PatchEmbedding(nn.Conv2d):
    """The ViT's ``conv1`` (kernel = stride = patch, no bias), computed as one matmul over
    flattened patches: (B, 3, H, W) -> (B, grid*grid, width), row-major over the grid as the
    convolution's output flattens. Same weight and name as the Conv2d (every checkpoint
    loads), and still a Conv2d to mixed precision's cast; MindSpore 2.10's CPU Conv2d runs a
    32x32/stride-32 kernel at ~1 GFLOP/s, a matmul at ~150. The matmul is a 2-D one against
    the untransposed weight: a batched ``ops.matmul`` with a 2-D operand copies the weight
    once per image on CPU (0.3 GB for a ViT-B/32 batch of 32)."""

    def __init__(self, width: int, patch_size: int, has_bias: bool = False):
        super().__init__(3, width, kernel_size=patch_size, stride=patch_size, pad_mode="valid",
                         has_bias=has_bias)
        self.width = width
        self.patch_size = patch_size

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
            out = out + self.bias.astype(out.dtype)
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


class PatchDropout(nn.Cell):
    """FLIP's patch dropout (open_clip's ``PatchDropout``): in training, each image keeps a
    random ``max(1, int(n * (1 - prob)))`` of its ``n`` patch tokens (those with the largest
    of ``n`` standard normal draws, in that order) after the ``prefix_tokens`` (the class
    token; none for timm's SigLIP ViTs); inference keeps all. ``prob`` may be changed before a
    run compiles (``runner.force_patch_dropout``)."""

    def __init__(self, prob: float, prefix_tokens: int = 1):
        super().__init__()
        self.prob = float(prob)
        self.prefix_tokens = prefix_tokens

    def construct(self, x):
        if not self.training or self.prob == 0.0:
            return x
        return self.keep(x, ops.standard_normal((x.shape[0], x.shape[1] - self.prefix_tokens)))

    def keep(self, x, noise):
        """The prefix tokens and the patch tokens with the largest ``noise`` ``(B, n)``."""
        b, n, d = x.shape
        p = self.prefix_tokens
        count = max(1, int((n - p) * (1 - self.prob)))
        index = ops.topk(noise, count)[1].astype(ms.int32)
        patches = ops.gather_elements(x[:, p:], 1, ops.broadcast_to(index.reshape(b, count, 1),
                                                                     (b, count, d)))
        return ops.concat((x[:, :p], patches), axis=1) if p else patches


class VisionTransformer(nn.Cell):
    """open_clip's ViT: patchify, prepend a class token, add positions, (patch dropout),
    ``ln_pre``, transformer, pool, project. Switched-off parts (``no_ln_pre``, LayerScale)
    are identities under open_clip's names, so the weight layouts stay one-to-one.
    ``construct`` returns the projected pooled feature; :meth:`forward_with_tokens` also the
    token features (CoCa's ``output_tokens``)."""

    def __init__(self, cfg: CLIPVisionCfg, embed_dim: int, quick_gelu: bool):
        super().__init__()
        width = cfg.width
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        self.grid = cfg.image_size // cfg.patch_size
        self.width = width
        scale = width ** -0.5
        eps = cfg.norm_eps
        self.conv1 = PatchEmbedding(width, cfg.patch_size)
        self.class_embedding = normal_param((width,), scale, "class_embedding")
        if cfg.pos_embed_type == "sin_cos_2d":
            self.positional_embedding = Parameter(
                Tensor(sincos_2d_position_embedding(width, self.grid)), name="positional_embedding",
                requires_grad=False)
        else:
            self.positional_embedding = normal_param((self.grid * self.grid + 1, width), scale,
                                                     "positional_embedding")
        self.patch_dropout = PatchDropout(cfg.patch_dropout)
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else LayerNorm(width, eps)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio,
                                       cfg.block(quick_gelu))
        self.attn_pool = None
        pool_dim = width
        if cfg.attentional_pool:
            self.attn_pool = AttentionalPooler(embed_dim, width, cfg.attn_pooler_heads,
                                               cfg.attn_pooler_queries, eps)
            pool_dim = embed_dim
        self.final_ln_after_pool = cfg.final_ln_after_pool and not cfg.attentional_pool
        self.global_pool = VisionPool(cfg.pool_type)
        self.ln_post = LayerNorm(pool_dim, eps)
        self.proj = normal_param((pool_dim, embed_dim), scale, "proj")

    def forward_with_tokens(self, x):
        """``(pooled features (B, embed_dim), token features)``."""
        x = self.conv1(x)  # (B, grid*grid, width)
        b = x.shape[0]
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, -1),
                               (b, 1, self.width))
        x = ops.concat((cls, x), axis=1)
        x = x + self.positional_embedding.astype(x.dtype)
        x = self.ln_pre(self.patch_dropout(x))
        x = self.transformer(x)
        # open_clip's _pool: the norm goes after the attentional pooler, or after the global
        # pool (final_ln_after_pool), or on every token before it
        if self.attn_pool is not None:
            pooled, tokens = self.global_pool(self.ln_post(self.attn_pool(x)))
        elif self.final_ln_after_pool:
            pooled, tokens = self.global_pool(x)
            pooled = self.ln_post(pooled)
        else:
            pooled, tokens = self.global_pool(self.ln_post(x))
        return ops.matmul(pooled, self.proj.astype(pooled.dtype)), tokens

    def construct(self, x):
        return self.forward_with_tokens(x)[0]

    def set_patch_dropout(self, prob: float) -> None:
        self.patch_dropout.prob = float(prob)

    def lock_groups(self) -> list:
        """open_clip's layer groups for locking: embeddings, each block, final norm + projection."""
        groups = [[self.conv1, self.class_embedding, self.positional_embedding, self.ln_pre]]
        groups += [[b] for b in self.transformer.resblocks]
        return groups + [[self.ln_post, self.proj]
                         + ([self.attn_pool] if self.attn_pool is not None else [])]
