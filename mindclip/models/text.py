"""The text transformer tower of CLIP (OpenAI's and open_clip's native one)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from .config import CLIPTextCfg
from .layers import LayerNorm, Transformer, causal_mask, dense, normal_param
from .pooling import TextPool

_NEG = float(np.finfo(np.float32).min)  # a finite -inf: see causal_mask


class TextTransformer(nn.Cell):
    """Token + position embeddings, transformer (causal unless ``no_causal_mask``),
    ``ln_final``, then one token per text (``pool_type``) projected to the embedding space.

    With ``embed_cls`` a learned class token is appended after the tokens, padding
    (``pad_id``) is masked from the keys, and the class token's output, ``ln_final``-ed, is the
    pooled feature: open_clip's CoCa text tower, including its mask layout (the class token's
    always-valid slot is placed first in the key mask, as the released CoCa weights expect).
    """

    def __init__(self, cfg: CLIPTextCfg, embed_dim: int, quick_gelu: bool):
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.width = cfg.width
        self.embed_cls = cfg.embed_cls
        self.pad_id = cfg.pad_id
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width, embedding_table=Normal(0.02))
        positions = cfg.context_length + (1 if cfg.embed_cls else 0)
        if cfg.embed_cls:
            self.cls_emb = normal_param((cfg.width,), 0.01, "cls_emb")
        self.positional_embedding = normal_param((positions, cfg.width), 0.01,
                                                 "positional_embedding")
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio,
                                       cfg.block(quick_gelu))
        self.ln_final = LayerNorm(cfg.width, cfg.norm_eps)
        self.text_pool = TextPool(cfg.pool_type, cfg.eos_id)
        self.proj_type = "none" if cfg.proj_type == "none" else (
            "linear_bias" if cfg.proj_bias else "matrix")
        if self.proj_type == "linear_bias":  # open_clip's Linear: weight (embed_dim, width) + bias
            self.text_projection = dense(cfg.width, embed_dim, cfg.width ** -0.5)
        elif self.proj_type == "matrix":
            self.text_projection = normal_param((cfg.width, embed_dim), cfg.width ** -0.5,
                                                "text_projection")
        else:
            self.text_projection = None
        self.attn_mask = None if cfg.no_causal_mask else causal_mask(positions)

    def _mask(self, text, n: int):
        mask = None if self.attn_mask is None else self.attn_mask[:n, :n]
        if not self.embed_cls:
            return mask
        b = text.shape[0]
        valid = ops.concat((ops.ones((b, 1), ms.bool_), ops.not_equal(text, self.pad_id)), axis=1)
        keys = ops.select(valid, ops.zeros(valid.shape, ms.float32),
                          ops.fill(ms.float32, valid.shape, _NEG)).reshape(b, 1, n)
        keys = ops.broadcast_to(keys, (b, n, n))
        return keys if mask is None else ops.maximum(keys + mask, _NEG)

    def token_features(self, text):
        """Per-token outputs, ``(B, L, width)``: ``ln_final``-ed, except with ``embed_cls``
        (``(B, L + 1, width)``, the class token last and un-normed; :meth:`pool` norms it)."""
        x = self.token_embedding(text)
        if self.embed_cls:
            b = x.shape[0]
            cls = ops.broadcast_to(self.cls_emb.astype(x.dtype).reshape(1, 1, -1), (b, 1, self.width))
            x = ops.concat((x, cls), axis=1)
        n = x.shape[1]
        x = x + self.positional_embedding[:n].astype(x.dtype)
        x = self.transformer(x, self._mask(text, n))
        return x if self.embed_cls else self.ln_final(x)

    def pool(self, x, text):
        """The projected feature of each text (``(B, embed_dim)``; every token's for
        ``pool_type: none``)."""
        pooled = self.ln_final(x[:, -1]) if self.embed_cls else self.text_pool(x, text)
        if self.proj_type == "linear_bias":
            return self.text_projection(pooled)
        if self.proj_type == "matrix":
            return ops.matmul(pooled, self.text_projection.astype(pooled.dtype))
        return pooled

    def forward_with_tokens(self, text):
        """``(pooled features, token features)`` (the tokens without the class token)."""
        x = self.token_features(text)
        return self.pool(x, text), (x[:, :-1] if self.embed_cls else x)

    def construct(self, text):
        return self.pool(self.token_features(text), text)
