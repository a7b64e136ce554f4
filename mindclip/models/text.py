"""Causal text transformer tower of CLIP."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from .config import CLIPTextCfg
from .layers import LayerNorm, Transformer, causal_mask, dense, normal_param


class TextTransformer(nn.Cell):
    """Token + position embedding, causal transformer, LayerNorm, then the feature at the
    end-of-text token (the largest id in each row, as in OpenAI's CLIP) is projected."""

    def __init__(self, cfg: CLIPTextCfg, embed_dim: int, quick_gelu: bool):
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.width = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width, embedding_table=Normal(0.02))
        self.positional_embedding = normal_param((cfg.context_length, cfg.width), 0.01,
                                                 "positional_embedding")
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_final = LayerNorm(cfg.width)
        self.proj_bias = cfg.proj_bias
        if cfg.proj_bias:  # open_clip's Linear projection: weight (embed_dim, width) + bias
            self.text_projection = dense(cfg.width, embed_dim, cfg.width ** -0.5)
        else:
            self.text_projection = normal_param((cfg.width, embed_dim), cfg.width ** -0.5,
                                                "text_projection")
        self.attn_mask = causal_mask(cfg.context_length)

    def token_features(self, text):
        """Per-token outputs of the final LayerNorm, ``(B, L, width)``."""
        n = text.shape[1]
        x = self.token_embedding(text)
        x = x + self.positional_embedding[:n].astype(x.dtype)
        x = self.transformer(x, self.attn_mask[:n, :n])
        return self.ln_final(x)

    def pool(self, x, text):
        """The projected feature at each row's end-of-text token, ``(B, embed_dim)``."""
        b = text.shape[0]
        # ids < 2**24, so the float cast is exact and argmax finds the end-of-text token.
        eot = text.astype(ms.float32).argmax(axis=-1).astype(ms.int32)
        index = ops.broadcast_to(eot.reshape(b, 1, 1), (b, 1, self.width))
        pooled = ops.gather_elements(x, 1, index).reshape(b, self.width)
        if self.proj_bias:
            return self.text_projection(pooled)
        return ops.matmul(pooled, self.text_projection.astype(pooled.dtype))

    def construct(self, text):
        return self.pool(self.token_features(text), text)
