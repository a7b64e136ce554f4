"""BERT and RoBERTa text encoders as MindSpore Cells, with Hugging Face's module names
(``embeddings.word_embeddings``, ``encoder.layer.N.attention.self.query``, ``pooler.dense``)
so that a Hugging Face state dict maps onto them by MindSpore's suffixes alone
(``weight`` -> ``embedding_table`` / ``gamma``, ``bias`` -> ``beta`` for norms).

Post-norm layers with the config's ``layer_norm_eps`` (computed in fp32), exact GELU, the
attention mask applied to padded keys, and the pooler (dense + tanh on the first token).
RoBERTa differs only in its position ids: they start after ``pad_token_id`` and skip pads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from .checkpointing import Blocks
from .layers import Dense, LayerNorm, PerHeadAttention, attention_per_head, make_activation

# Hugging Face model types whose position ids follow RoBERTa's rule.
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
_ACTIVATIONS = ("gelu", "gelu_new", "relu")


@dataclass
class BertConfig:
    """The fields of a Hugging Face BERT/RoBERTa ``config.json`` this encoder implements."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not implemented; valid: {_ACTIVATIONS}")

    @property
    def is_roberta(self) -> bool:
        return self.model_type in ROBERTA_TYPES

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BertConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in text config; valid keys are: {sorted(valid)}")
        return cls(**data)

    @classmethod
    def from_hf(cls, data: Dict[str, Any]) -> "BertConfig":
        """From a Hugging Face ``config.json`` dict (other keys are ignored, but options this
        encoder does not implement are refused)."""
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={data['position_embedding_type']!r}: only "
                             "absolute position embeddings are implemented")
        if data.get("is_decoder") or data.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention text models are not text encoders")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _dense(cfg: BertConfig, n_in: int, n_out: int) -> Dense:
    return Dense(n_in, n_out, weight_init=Normal(cfg.initializer_range), bias_init="zeros")


class BertEmbeddings(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        init = Normal(cfg.initializer_range)
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, embedding_table=init)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size,
                                                embedding_table=init)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size,
                                                  embedding_table=init)
        self.LayerNorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.roberta = cfg.is_roberta
        self.pad = cfg.pad_token_id

    def construct(self, input_ids):
        b, n = input_ids.shape
        if self.roberta:
            # padding_idx + running count of real tokens; pads keep padding_idx
            real = (input_ids != self.pad).astype(ms.int32)
            positions = ops.cumsum(real, axis=1) * real + self.pad
        else:
            positions = ops.broadcast_to(ops.arange(n, dtype=ms.int32).reshape(1, n), (b, n))
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(ops.zeros_like(input_ids))
             + self.position_embeddings(positions))
        return self.LayerNorm(x)


class BertSelfAttention(nn.Cell):
    """Hugging Face's separate query/key/value projections; on CPU the heads run one by one
    (:class:`~mindclip.models.layers.PerHeadAttention`, for its memory), elsewhere batched."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.query = _dense(cfg, cfg.hidden_size, cfg.hidden_size)
        self.key = _dense(cfg, cfg.hidden_size, cfg.hidden_size)
        self.value = _dense(cfg, cfg.hidden_size, cfg.hidden_size)
        self.per_head = attention_per_head()
        self.core = PerHeadAttention(self.heads, self.head_dim)

    def _split(self, x, b, n):
        return x.reshape(b, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x, additive_mask):
        b, n, d = x.shape
        if self.per_head:  # the mask is (B, L, L) here, see BertModel
            return self.core(self.query(x), self.key(x), self.value(x), additive_mask)
        q, k, v = self._split(self.query(x), b, n), self._split(self.key(x), b, n), self._split(self.value(x), b, n)
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)).astype(ms.float32) * self.scale + additive_mask
        probs = ops.softmax(scores, axis=-1).astype(v.dtype)
        return ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(b, n, d)


class BertSelfOutput(nn.Cell):
    """``LayerNorm(x + dense(h))``: used after attention and after the feed-forward."""

    def __init__(self, cfg: BertConfig, n_in: int):
        super().__init__()
        self.dense = _dense(cfg, n_in, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def construct(self, hidden, residual):
        return self.LayerNorm(self.dense(hidden) + residual)


class BertAttention(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        setattr(self, "self", BertSelfAttention(cfg))  # Hugging Face's module name
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def construct(self, x, additive_mask):
        return self.output(getattr(self, "self")(x, additive_mask), x)


class BertIntermediate(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = _dense(cfg, cfg.hidden_size, cfg.intermediate_size)
        self.act = make_activation(cfg.hidden_act)

    def construct(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def construct(self, x, additive_mask):
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = Blocks(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def construct(self, x, additive_mask):
        return self.layer(x, additive_mask)


class BertPooler(nn.Cell):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = _dense(cfg, cfg.hidden_size, cfg.hidden_size)

    def construct(self, x):
        return ops.tanh(self.dense(x[:, 0, :]))


class BertModel(nn.Cell):
    """``construct(input_ids, attention_mask) -> pooled (B, hidden)``: Hugging Face's
    ``pooler_output`` of ``BertModel`` / ``RobertaModel``; :meth:`hidden_states` is its
    ``last_hidden_state``. ``add_pooling_layer=False`` leaves the pooler out, as Hugging Face
    does for models used without it (open_clip's mean-pooled towers)."""

    def __init__(self, cfg: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg) if add_pooling_layer else None
        self.mask_value = float(np.finfo(np.float32).min)
        self.per_head = attention_per_head()

    def construct(self, input_ids, attention_mask):
        return self.pooler(self.hidden_states(input_ids, attention_mask))

    def hidden_states(self, input_ids, attention_mask):
        """The last layer's outputs, ``(B, L, hidden)``."""
        b, n = input_ids.shape
        additive = (1.0 - attention_mask.astype(ms.float32)) * self.mask_value
        if self.per_head:
            # One (B, L, L) broadcast for all heads and layers: broadcasting (B, 1, L) inside
            # every head's add keeps a (B, L, L) copy per head alive in CPU graphs.
            additive = ops.broadcast_to(additive.reshape(b, 1, n), (b, n, n))
        else:
            additive = additive.reshape(b, 1, 1, n)
        x = self.embeddings(input_ids)
        return self.encoder(x, additive)
