"""The M2M-100 encoder (Hugging Face's ``M2M100Encoder``; NLLB's), as open_clip's NLLB-CLIP
text towers use it: scaled token embeddings plus fixed sinusoidal positions that skip padding,
pre-norm layers (``self_attn_layer_norm``, ``final_layer_norm``), a final ``layer_norm``.
Hugging Face's module and parameter names."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal

from .checkpointing import Blocks
from .layers import Dense, LayerNorm, PerHeadAttention, make_activation

_NEG = float(np.finfo(np.float32).min)
_ACTIVATIONS = ("relu", "gelu")


@dataclass
class M2M100Config:
    """The fields of an M2M-100 / NLLB ``config.json`` the encoder uses."""

    model_type: str = "m2m_100"
    vocab_size: int = 128112
    d_model: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    activation_function: str = "relu"
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    pad_token_id: int = 1
    init_std: float = 0.02

    def __post_init__(self):
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(f"activation_function {self.activation_function!r}: valid are "
                             f"{sorted(_ACTIVATIONS)}")

    @classmethod
    def from_hf(cls, data: Dict[str, Any]) -> "M2M100Config":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def sinusoidal_positions(count: int, width: int, padding_idx: int) -> np.ndarray:
    """tensor2tensor's table (fairseq's): sines then cosines of geometric frequencies,
    ``count`` rows, the padding row zero."""
    half = width // 2
    freq = np.exp(np.arange(half, dtype=np.float32) * np.float32(-math.log(10000) / (half - 1)))
    angles = np.arange(count, dtype=np.float32)[:, None] * freq[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if width % 2:
        table = np.concatenate([table, np.zeros((count, 1), np.float32)], axis=1)
    table[padding_idx] = 0
    return table.astype(np.float32)


class M2M100Attention(nn.Cell):
    def __init__(self, cfg: M2M100Config):
        super().__init__()
        d, std = cfg.d_model, cfg.init_std
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            Dense(d, d, weight_init=Normal(std)) for _ in range(4))
        self.core = PerHeadAttention(cfg.encoder_attention_heads, d // cfg.encoder_attention_heads)

    def construct(self, x, mask):
        return self.out_proj(self.core(self.q_proj(x), self.k_proj(x), self.v_proj(x), mask))


class M2M100EncoderLayer(nn.Cell):
    def __init__(self, cfg: M2M100Config):
        super().__init__()
        d = cfg.d_model
        self.self_attn = M2M100Attention(cfg)
        self.self_attn_layer_norm = LayerNorm(d)
        self.fc1 = Dense(d, cfg.encoder_ffn_dim, weight_init=Normal(cfg.init_std))
        self.fc2 = Dense(cfg.encoder_ffn_dim, d, weight_init=Normal(cfg.init_std))
        self.act = make_activation(cfg.activation_function)
        self.final_layer_norm = LayerNorm(d)

    def construct(self, x, mask):
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class M2M100Encoder(nn.Cell):
    """``hidden_states(input_ids, attention_mask) -> (B, L, d_model)``, Hugging Face's
    ``M2M100Encoder`` ``last_hidden_state``."""

    def __init__(self, cfg: M2M100Config):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, embedding_table=Normal(cfg.init_std))
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
        self.positions = Tensor(sinusoidal_positions(cfg.max_position_embeddings + 2, cfg.d_model,
                                                     cfg.pad_token_id))
        self.pad = cfg.pad_token_id
        self.layers = Blocks(M2M100EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = LayerNorm(cfg.d_model)

    def hidden_states(self, input_ids, attention_mask):
        b, n = input_ids.shape
        real = (input_ids != self.pad).astype(ms.int32)
        position_ids = ops.cumsum(real, axis=1) * real + self.pad  # pads keep the zero row
        x = self.embed_tokens(input_ids) * self.embed_scale + ops.gather(self.positions, position_ids, 0)
        keys = (1.0 - attention_mask.astype(ms.float32)) * _NEG
        mask = ops.broadcast_to(keys.reshape(b, 1, n), (b, n, n))
        return self.layer_norm(self.layers(x, mask))
