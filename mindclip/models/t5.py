"""The T5 / mT5 encoder (Hugging Face's ``T5Stack`` of an encoder), as open_clip's mT5 text
towers use it: RMS norms before each sub-layer, attention without a 1/sqrt(d) scale plus a
learned relative-position bias (bidirectional buckets, computed in block 0 and shared), a
gated (mT5: tanh-GELU) or plain ReLU feed-forward, a final RMS norm. Module and parameter
names are Hugging Face's (``block.N.layer.0.SelfAttention.q``, ``final_layer_norm.weight``)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .checkpointing import Blocks
from .layers import Dense, make_activation

_NEG = float(np.finfo(np.float32).min)


@dataclass
class T5Config:
    """The fields of a T5/mT5 ``config.json`` the encoder uses."""

    model_type: str = "t5"
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    pad_token_id: int = 0

    def __post_init__(self):
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r}: relu or gated-gelu")

    @classmethod
    def from_hf(cls, data: Dict[str, Any]) -> "T5Config":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bidirectional bucket of each (query, key) offset, ``(length, length)`` int32:
    half the buckets per direction, exact below half of those, log-spaced up to
    ``max_distance``."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    exact = half // 2
    # float32 as torch computes it, so the rounding of the bucket edges matches; distances
    # below ``exact`` take the exact branch, so clipping them at 1 only keeps log(0) out
    far = np.maximum(distance, 1).astype(np.float32)
    large = exact + (np.log(far / exact) / math.log(max_distance / exact)
                     * (half - exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(distance < exact, distance, large)).astype(np.int32)


class T5LayerNorm(nn.Cell):
    """RMS norm, ``weight * x / sqrt(mean(x^2) + eps)``, computed in fp32."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(width, np.float32)), name="weight")
        self.eps = eps

    def construct(self, x):
        orig = x.dtype
        x = x.astype(ms.float32)
        x = x * ops.rsqrt((x * x).mean(axis=-1, keep_dims=True) + self.eps)
        return (self.weight * x).astype(orig)


def _linear(n_in: int, n_out: int) -> Dense:
    return Dense(n_in, n_out, weight_init=Normal(n_in ** -0.5), has_bias=False)


class T5Attention(nn.Cell):
    def __init__(self, cfg: T5Config, has_bias: bool):
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q, self.k, self.v = (_linear(cfg.d_model, inner) for _ in range(3))
        self.o = _linear(inner, cfg.d_model)
        if has_bias:
            self.relative_attention_bias = nn.Cell()
            self.relative_attention_bias.weight = Parameter(
                initializer(Normal(1.0), (cfg.relative_attention_num_buckets, cfg.num_heads),
                            ms.float32), name="weight")

    def bias(self, buckets):
        """``(1, heads, L, L)`` from the buckets ``(L, L)``."""
        values = ops.gather(self.relative_attention_bias.weight, buckets, 0)  # (L, L, H)
        return values.transpose(2, 0, 1).reshape((1, self.heads) + buckets.shape)

    def construct(self, x, position_bias):
        b, n, _ = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, self.d_kv).transpose(0, 2, 1, 3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)).astype(ms.float32) + position_bias
        probs = ops.softmax(scores, axis=-1).astype(v.dtype)
        out = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(b, n, self.heads * self.d_kv)
        return self.o(out)


class _SelfAttentionLayer(nn.Cell):
    def __init__(self, cfg: T5Config, has_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def construct(self, x, position_bias):
        return x + self.SelfAttention(self.layer_norm(x), position_bias)


class _DenseReluDense(nn.Cell):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.gated = cfg.feed_forward_proj == "gated-gelu"
        if self.gated:
            self.wi_0 = _linear(cfg.d_model, cfg.d_ff)
            self.wi_1 = _linear(cfg.d_model, cfg.d_ff)
            self.act = make_activation("gelu_tanh")
        else:
            self.wi = _linear(cfg.d_model, cfg.d_ff)
            self.act = make_activation("relu")
        self.wo = _linear(cfg.d_ff, cfg.d_model)

    def construct(self, x):
        if self.gated:
            return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.wo(self.act(self.wi(x)))


class _FeedForwardLayer(nn.Cell):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.DenseReluDense = _DenseReluDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def construct(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Cell):
    def __init__(self, cfg: T5Config, has_bias: bool):
        super().__init__()
        self.layer = nn.CellList([_SelfAttentionLayer(cfg, has_bias), _FeedForwardLayer(cfg)])

    def construct(self, x, position_bias):
        return self.layer[1](self.layer[0](x, position_bias))


class T5Encoder(nn.Cell):
    """``hidden_states(input_ids, attention_mask) -> (B, L, d_model)``, Hugging Face's
    ``T5EncoderModel`` ``last_hidden_state``."""

    def __init__(self, cfg: T5Config, max_length: int = 512):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, embedding_table=Normal(1.0))
        self.block = Blocks(T5Block(cfg, i == 0) for i in range(cfg.num_layers))
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.buckets = Tensor(relative_position_buckets(max_length, cfg.relative_attention_num_buckets,
                                                        cfg.relative_attention_max_distance))

    def hidden_states(self, input_ids, attention_mask):
        b, n = input_ids.shape
        x = self.embed_tokens(input_ids)
        keys = (1.0 - attention_mask.astype(ms.float32)) * _NEG
        bias = self.block.cell_list[0].layer[0].SelfAttention.bias(self.buckets[:n, :n]) + keys.reshape(b, 1, 1, n)
        return self.final_layer_norm(self.block(x, bias))
