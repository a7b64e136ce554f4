"""CoCa's multimodal text decoder (open_clip's ``MultimodalTransformer``): per layer, a causal
self-attention block over the text tokens, then a cross-attention block whose keys and
values are the image tokens (normed by ``ln_1_kv``); ``ln_final``, then a projection to the
vocabulary. Parameter names are open_clip's (``resblocks``, ``cross_attn``, ``ln_1_kv``)."""
from __future__ import annotations

from mindspore import nn, ops

from .checkpointing import Blocks
from .layers import (MLP, BlockCfg, LayerNorm, LayerScale, ResidualAttentionBlock, causal_mask,
                     linear_2d, normal_param)
from .pooling import CrossAttention


class CrossAttentionBlock(nn.Cell):
    """open_clip's ``ResidualAttentionBlock(is_cross_attention=True)``:
    ``x + ls_1(attn(ln_1(x), ln_1_kv(context)))`` then ``x + ls_2(mlp(ln_2(x)))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, block: BlockCfg, layers: int):
        super().__init__()
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        self.ln_1 = LayerNorm(width, block.norm_eps)
        self.ln_1_kv = LayerNorm(width, block.norm_eps)
        self.attn = CrossAttention(width, width, heads)
        self.ln_2 = LayerNorm(width, block.norm_eps)
        self.mlp = MLP(width, int(width * mlp_ratio), block.act, (2 * width) ** -0.5, proj_std)
        scaled = block.ls_init_value is not None
        self.ls_1 = LayerScale(width, block.ls_init_value) if scaled else nn.Identity()
        self.ls_2 = LayerScale(width, block.ls_init_value) if scaled else nn.Identity()

    def context_kv(self, context):
        """This block's keys and values of the image tokens (the same at every decoding step)."""
        return self.attn.keys_values(self.ln_1_kv(context))

    def attend(self, x, k, v):
        x = x + self.ls_1(self.attn.attend(self.ln_1(x), k, v))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def construct(self, x, context):
        k, v = self.context_kv(context)
        return self.attend(x, k, v)


class MultimodalDecoder(nn.Cell):
    """``(image tokens (B, N, width), text token features (B, L, width)) -> logits (B, L,
    vocab)``: causal in the text, every text position sees every image token."""

    def __init__(self, width: int, layers: int, heads: int, context_length: int, mlp_ratio: float,
                 block: BlockCfg, vocab_size: int):
        super().__init__()
        self.context_length = context_length
        self.layers = layers
        self.resblocks = Blocks(ResidualAttentionBlock(width, heads, mlp_ratio, block, layers)
                                for _ in range(layers))
        self.cross_attn = Blocks(CrossAttentionBlock(width, heads, mlp_ratio, block, layers)
                                 for _ in range(layers))
        self.ln_final = LayerNorm(width, block.norm_eps)
        self.text_projection = normal_param((width, vocab_size), width ** -0.5, "text_projection")
        self.attn_mask = causal_mask(context_length)

    def hidden(self, image_embs, text_embs):
        """``ln_final``-ed outputs ``(B, L, width)``, before the vocabulary projection."""
        n = text_embs.shape[1]
        mask = ops.broadcast_to(self.attn_mask[:n, :n], (text_embs.shape[0], n, n))
        x = text_embs
        for i in range(self.layers):
            x = self.resblocks.call(i, x, mask)
            x = self.cross_attn.call(i, x, image_embs)
        return self.ln_final(x)

    def context_kv(self, image_embs):
        """Every cross-attention block's keys and values of ``image_embs``, flat ``(k0, v0,
        k1, v1, ...)``: decoding computes them once per generation instead of once per step
        (at CoCa ViT-B/32's 257 image tokens, most of a step's work)."""
        out = ()
        for cross in self.cross_attn.cell_list:
            out = out + cross.context_kv(image_embs)
        return out

    def hidden_from_kv(self, context_kv, text_embs):
        """:meth:`hidden` with the image side given as :meth:`context_kv`."""
        n = text_embs.shape[1]
        mask = ops.broadcast_to(self.attn_mask[:n, :n], (text_embs.shape[0], n, n))
        x = text_embs
        for i, (block, cross) in enumerate(zip(self.resblocks.cell_list, self.cross_attn.cell_list)):
            x = block(x, mask)
            x = cross.attend(x, context_kv[2 * i], context_kv[2 * i + 1])
        return self.ln_final(x)

    def project(self, hidden):
        """Vocabulary logits of decoder outputs (any leading shape)."""
        return linear_2d(hidden, self.text_projection)

    def construct(self, image_embs, text_embs):
        return self.project(self.hidden(image_embs, text_embs))

