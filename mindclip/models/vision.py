"""Vision Transformer image tower (CLIP's ViT-B/32, B/16, L/14, ...)."""
from __future__ import annotations

from mindspore import Parameter, Tensor, nn, ops

from .config import CLIPVisionCfg
from .layers import LayerNorm, Transformer, normal_param
from .patch import PatchDropout, PatchEmbedding, sincos_2d_position_embedding
from .pooling import AttentionalPooler, VisionPool

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
        self.patch_dropout = PatchDropout(prob).set_train(self.training)

    def lock_groups(self) -> list:
        """open_clip's layer groups for locking: embeddings, each block, final norm + projection."""
        groups = [[self.conv1, self.class_embedding, self.positional_embedding, self.ln_pre]]
        groups += [[b] for b in self.transformer.resblocks]
        return groups + [[self.ln_post, self.proj]
                         + ([self.attn_pool] if self.attn_pool is not None else [])]
