"""How a tower turns its tokens into one feature: the ViT's global pools (class token, mean of
the patch tokens, or every token), the text tower's token choice (end-of-text by highest id
or by ``eos_id``, first, last, or every token) and the attentional pooler (learned queries
cross-attending to the tokens: CoCa's image tower). Chosen when a tower is built."""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from .layers import BiasAdd, LayerNorm, PerHeadAttention, dense, linear_2d


def take_tokens(x, index):
    """``x[b, index[b]]`` for ``x`` ``(B, L, D)`` and ``index`` ``(B,)`` -> ``(B, D)``."""
    b, _, d = x.shape
    picked = ops.gather_elements(x, 1, ops.broadcast_to(index.reshape(b, 1, 1), (b, 1, d)))
    return picked.reshape(b, d)


class VisionPool(nn.Cell):
    """open_clip's ``_global_pool``: ``(pooled, tokens)`` of a ViT's output (class token
    first): ``tok`` -> the class token, ``avg`` -> the mean of the patch tokens, ``none`` ->
    every token; ``tokens`` are the patch tokens (every token for ``none``)."""

    def __init__(self, pool_type: str):
        super().__init__()
        self.pool_type = pool_type

    def construct(self, x):
        if self.pool_type == "none":
            return x, x
        tokens = x[:, 1:]
        if self.pool_type == "avg":
            return tokens.mean(axis=1), tokens
        return x[:, 0], tokens


class TextPool(nn.Cell):
    """open_clip's ``text_global_pool``: the token of each row that represents the text:
    ``argmax`` (the highest id: OpenAI's end of text), ``eos`` (the first ``eos_id``; the first
    token when a row has none), ``first``, ``last`` or ``none`` (every token)."""

    def __init__(self, pool_type: str, eos_id: int):
        super().__init__()
        self.pool_type = pool_type
        self.eos_id = eos_id

    def construct(self, x, text):
        if self.pool_type == "first":
            return x[:, 0]
        if self.pool_type == "last":
            return x[:, -1]
        if self.pool_type == "none":
            return x
        if self.pool_type == "eos":
            keys = ops.equal(text, self.eos_id).astype(ms.float32)
        else:  # ids < 2**24: the float cast is exact, argmax finds the largest id
            keys = text.astype(ms.float32)
        return take_tokens(x, keys.argmax(axis=-1).astype(ms.int32))


class _Bias(nn.Cell):
    # Holds PyTorch MultiheadAttention's in_proj_bias when its q/k/v weights are separate
    # (key width != query width), under the name the packed layout gives it.
    def __init__(self, size: int):
        super().__init__()
        self.bias = Parameter(ops.zeros(size, ms.float32), name="bias")


class CrossAttention(nn.Cell):
    """PyTorch's ``nn.MultiheadAttention(d_model, heads, kdim=context_dim,
    vdim=context_dim, batch_first=True)`` for queries ``(B, Q, d_model)`` and keys/values
    ``(B, L, context_dim)``, with its parameter layout: one packed ``in_proj`` when the widths
    are equal, else ``q_proj``/``k_proj``/``v_proj`` weights and one packed ``in_proj`` bias."""

    def __init__(self, d_model: int, context_dim: int, heads: int):
        super().__init__()
        std = d_model ** -0.5
        self.d_model = d_model
        self.packed = context_dim == d_model
        if self.packed:
            self.in_proj = dense(d_model, 3 * d_model, std)
        else:
            self.q_proj = dense(d_model, d_model, std, has_bias=False)
            self.k_proj = dense(context_dim, d_model, std, has_bias=False)
            self.v_proj = dense(context_dim, d_model, std, has_bias=False)
            self.in_proj = _Bias(3 * d_model)
        self.out_proj = dense(d_model, d_model, std)
        self.core = PerHeadAttention(heads, d_model // heads)
        # a broadcast `+ bias` kept ~0.15 GB more per CoCa ViT-B/32 decoder layer at batch 32
        self.add_bias = BiasAdd()
        self.no_mask = ms.Tensor(0.0, ms.float32)

    def _weights(self):
        d = self.d_model
        if self.packed:
            w = self.in_proj.weight
            return w[:d], w[d:2 * d], w[2 * d:]
        return self.q_proj.weight, self.k_proj.weight, self.v_proj.weight

    def keys_values(self, kv):
        """The projected keys and values of ``kv``: what :meth:`attend` takes, computed once
        when the same context serves many queries (CoCa's decoding steps)."""
        d, bias = self.d_model, self.in_proj.bias
        _, wk, wv = self._weights()
        return (linear_2d(kv, wk, True, bias[d:2 * d], self.add_bias),
                linear_2d(kv, wv, True, bias[2 * d:], self.add_bias))

    def attend(self, q, k, v):
        """The attention output of queries ``q`` over projected keys and values."""
        q = linear_2d(q, self._weights()[0], True, self.in_proj.bias[:self.d_model], self.add_bias)
        return self.out_proj(self.core(q, k, v, self.no_mask))

    def construct(self, q, kv):
        k, v = self.keys_values(kv)
        return self.attend(q, k, v)


class AttentionalPooler(nn.Cell):
    """open_clip's ``AttentionalPooler``: ``n_queries`` learned queries (LayerNorm ``ln_q``)
    attend to the LayerNormed tokens (``ln_k``): ``(B, L, context_dim)`` ->
    ``(B, n_queries, d_model)``."""

    def __init__(self, d_model: int, context_dim: int, heads: int, n_queries: int,
                 eps: float = 1e-5):
        super().__init__()
        self.query = Parameter(initializer(Normal(1.0), (n_queries, d_model), ms.float32),
                               name="query")
        self.attn = CrossAttention(d_model, context_dim, heads)
        self.ln_q = LayerNorm(d_model, eps)
        self.ln_k = LayerNorm(context_dim, eps)

    def construct(self, x):
        x = self.ln_k(x)
        q = self.ln_q(self.query.astype(x.dtype))
        q = ops.broadcast_to(q.reshape((1,) + q.shape), (x.shape[0],) + q.shape)
        return self.attn(q, x)
