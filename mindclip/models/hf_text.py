"""open_clip's ``HFTextEncoder``: a Hugging Face text encoder (BERT, RoBERTa, XLM-RoBERTa,
mT5/T5, NLLB's M2M-100) pooled and projected into CLIP's space. The encoder is built from the
model's own ``config.json`` (``text_cfg.hf_model_config``); parameter names follow open_clip's
layout (``text.transformer.*`` in Hugging Face's names, ``text.proj``)."""
from __future__ import annotations

from typing import Any, Dict

import mindspore as ms
from mindspore import nn, ops

from .bert import ROBERTA_TYPES, BertConfig, BertModel
from .config import CLIPTextCfg
from .exceptions import MissingTowerError
from .layers import GELU, Dense
from .m2m100 import M2M100Config, M2M100Encoder
from .t5 import T5Config, T5Encoder

# model_type -> (config field holding the width, how to build the encoder)
_ENCODERS = {
    **{t: "bert" for t in ("bert",) + ROBERTA_TYPES},
    "t5": "t5", "mt5": "t5",
    "m2m_100": "m2m_100",
}


def _build_encoder(hf: Dict[str, Any], cls_pooler: bool, context_length: int):
    kind = _ENCODERS.get(hf.get("model_type"))
    if kind == "bert":
        cfg = BertConfig.from_hf(hf)
        # Hugging Face builds the pooler only when the pooled output is used
        return BertModel(cfg, add_pooling_layer=cls_pooler), cfg.hidden_size, cfg.pad_token_id
    if kind == "t5":
        cfg = T5Config.from_hf(hf)
        return T5Encoder(cfg, max_length=max(context_length, 512)), cfg.d_model, cfg.pad_token_id
    if kind == "m2m_100":
        cfg = M2M100Config.from_hf(hf)
        return M2M100Encoder(cfg), cfg.d_model, cfg.pad_token_id
    raise MissingTowerError(f"a Hugging Face text tower of model_type {hf.get('model_type')!r} "
                            f"is not implemented; implemented: {sorted(_ENCODERS)}")


class HFTextTower(nn.Cell):
    """``construct(ids) -> (B, embed_dim)``: the padding mask is ``ids != pad_token_id``;
    pooling (``hf_pooler_type``): ``mean_pooler`` (mean of the unpadded tokens),
    ``cls_pooler`` (the encoder's own pooler where it has one, e.g. BERT's dense + tanh; else
    the first token), ``cls_last_hidden_state_pooler`` (the first token); projection
    (``hf_proj_type``): ``linear``, ``mlp`` (Linear, GELU, Linear; hidden width the mean of
    both widths; no biases), or none when the widths are equal and no type is set."""

    def __init__(self, cfg: CLIPTextCfg, embed_dim: int, hf_config: Dict[str, Any]):
        super().__init__()
        self.pooler_type = cfg.hf_pooler_type
        self.transformer, width, self.pad_id = _build_encoder(
            hf_config, cfg.hf_pooler_type == "cls_pooler", cfg.context_length)
        self.encoder_pooler = getattr(self.transformer, "pooler", None) is not None
        self.context_length = cfg.context_length
        self.vocab_size = hf_config.get("vocab_size")
        if width == embed_dim and cfg.hf_proj_type is None:
            self.proj = nn.Identity()
        elif cfg.hf_proj_type == "linear":
            self.proj = Dense(width, embed_dim, has_bias=False)
        else:
            hidden = (width + embed_dim) // 2
            self.proj = nn.SequentialCell([Dense(width, hidden, has_bias=False), GELU(),
                                           Dense(hidden, embed_dim, has_bias=False)])

    def forward_with_tokens(self, text):
        """``(pooled features, token features)``."""
        mask = ops.not_equal(text, self.pad_id).astype(ms.int32)
        hidden = self.transformer.hidden_states(text, mask)
        if self.pooler_type == "mean_pooler":
            weights = mask.astype(hidden.dtype).expand_dims(-1)
            pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        elif self.pooler_type == "cls_pooler" and self.encoder_pooler:
            pooled = self.transformer.pooler(hidden)
        else:
            pooled = hidden[:, 0]
        return self.proj(pooled), hidden

    def construct(self, text):
        return self.forward_with_tokens(text)[0]

    def lock(self, unlocked_layers: int = 0) -> None:
        """open_clip's ``HFTextEncoder.lock``: freeze the whole encoder, or all but its last
        ``unlocked_layers`` layers (the embeddings count as the first; final norms and the
        pooler stay trainable then); the projection always trains."""
        params = list(self.transformer.get_parameters())
        if unlocked_layers:
            enc = self.transformer
            embeddings = getattr(enc, "embeddings", None) or enc.embed_tokens
            layers = (enc.encoder.layer if hasattr(enc, "encoder") else
                      getattr(enc, "block", None) or enc.layers)
            modules = [embeddings, *layers][:-unlocked_layers]
            params = [p for m in modules for p in m.get_parameters()]
        for p in params:
            p.requires_grad = False
