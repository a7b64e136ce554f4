"""CoCa (Yu et al. 2022, "Contrastive Captioners") as open_clip builds it: CLIP towers whose
image tower ends in an attentional pooler (one contrastive query + captioning queries) and
whose text tower appends a class token (``embed_cls``), plus a multimodal text decoder that
cross-attends to the image tokens and predicts the next word. It encodes like CLIP and
writes captions (``generate``, in :mod:`mindclip.generation`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from mindspore import Tensor, ops

from .clip import CLIPModel, l2_normalize
from .config import CLIPConfig, CLIPTextCfg, _from_dict
from .layers import BlockCfg
from .multimodal import MultimodalDecoder


@dataclass
class MultimodalCfg(CLIPTextCfg):
    """open_clip's ``MultimodalCfg`` (a text config plus ``dim_head``, ``n_queries``,
    ``attn_pooler_heads``). The decoder is built from ``context_length``, ``width``,
    ``heads``, ``layers``, ``mlp_ratio`` and ``ls_init_value``, with the model's activation
    and eps 1e-5, as open_clip builds it; its vocabulary is the text tower's."""

    dim_head: int = 64
    n_queries: int = 256
    attn_pooler_heads: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.act_kwargs or self.norm_kwargs:
            raise ValueError("multimodal_cfg: open_clip's decoder ignores act_kwargs/norm_kwargs; "
                             "mindclip refuses them rather than ignore them too")


def _default_multimodal() -> MultimodalCfg:
    return MultimodalCfg(context_length=76, width=512, heads=8, layers=12)


@dataclass
class CoCaConfig(CLIPConfig):
    """open_clip's CoCa model config (``coca_ViT-B-32.json`` ...): CLIP's fields plus
    ``multimodal_cfg``."""

    multimodal_cfg: MultimodalCfg = field(default_factory=_default_multimodal)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "CoCaConfig":
        data = dict(data)
        multimodal = data.pop("multimodal_cfg", {})
        top = super().from_dict(data)
        top.multimodal_cfg = multimodal if isinstance(multimodal, MultimodalCfg) else _from_dict(
            MultimodalCfg, multimodal, "multimodal_cfg")
        return top

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        d["multimodal_cfg"] = asdict(self.multimodal_cfg)
        if d["multimodal_cfg"]["hf_model_config"] is None:
            del d["multimodal_cfg"]["hf_model_config"]
        return d

    @staticmethod
    def claims(data: Dict[str, Any]) -> bool:
        """Whether an open_clip model config (a dict) is a CoCa one."""
        return "multimodal_cfg" in data


class CoCaModel(CLIPModel):
    """CoCa as a MindSpore Cell: CLIP's calls (``encode_image``, ``encode_text``), and
    ``model(images, tokens)`` -> ``(image_features, text_features, logits, logit_scale)``
    with unit features and the decoder's next-token logits ``(B, L - 1, vocab)`` for the
    tokens ``tokens[:, :-1]`` (open_clip's ``forward``; the labels are ``tokens[:, 1:]``).
    ``generate(images, ...)`` writes captions (open_clip's arguments and outputs).
    ``encode_image``/``encode_text`` return unit-length features unless ``normalize=False``,
    as open_clip's ``CoCa`` does (CLIP's return raw ones)."""

    family = "coca"
    normalize_by_default = True

    def __init__(self, config: CoCaConfig):
        super().__init__(config)
        mm = config.multimodal_cfg
        block = BlockCfg(act="quick_gelu" if config.quick_gelu else "gelu", norm_eps=1e-5,
                         ls_init_value=mm.ls_init_value)
        self.text_decoder = MultimodalDecoder(mm.width, mm.layers, mm.heads, mm.context_length,
                                              mm.mlp_ratio, block, config.text_cfg.vocab_size)
        self.pad_id = config.text_cfg.pad_id

    @property
    def vocab_size(self) -> int:
        return self.config.text_cfg.vocab_size

    def image_tokens(self, image: Tensor) -> Tensor:
        """What the decoder attends to: the image tower's token outputs ``(B, N, width)``."""
        return self.visual.forward_with_tokens(image)[1]

    def decode_context(self, image_tokens: Tensor) -> Tuple[Tensor, ...]:
        """The decoder's per-layer keys and values of ``image_tokens``, computed once per
        generation (:meth:`decode_logits` takes them)."""
        return self.text_decoder.context_kv(image_tokens)

    def decode_logits(self, context: Tuple[Tensor, ...], text: Tensor, position: Tensor) -> Tensor:
        """Next-token logits ``(B, vocab)`` after the prefix ``text[:, :position + 1]`` of
        ``text`` ``(B, L)`` (``position``: a ``(1,)`` int32 tensor), the image side given as
        :meth:`decode_context`; only that position is projected to the vocabulary."""
        token_embs = self.text.forward_with_tokens(text)[1]
        hidden = self.text_decoder.hidden_from_kv(context, token_embs)
        return self.text_decoder.project(ops.gather(hidden, position, 1)[:, 0])

    def forward_hidden(self, image: Tensor, text: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Unnormalised image and text features and the decoder's teacher-forced outputs
        ``(B, L - 1, width)`` before the vocabulary projection (the training objective
        projects them chunk by chunk)."""
        pooled, image_tokens = self.visual.forward_with_tokens(image)
        text_features, token_embs = self.text.forward_with_tokens(text)
        return pooled, text_features, self.text_decoder.hidden(image_tokens, token_embs[:, :-1])

    def forward_features(self, image: Tensor, text: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Unnormalised image and text features and the teacher-forced caption logits."""
        pooled, text_features, hidden = self.forward_hidden(image, text)
        return pooled, text_features, self.text_decoder.project(hidden)

    def construct(self, image, text):
        image_features, text_features, logits = self.forward_features(image, text)
        return (l2_normalize(image_features), l2_normalize(text_features), logits,
                ops.exp(self.logit_scale))

    def generate(self, images: Any, text: Optional[Any] = None, **kwargs: Any) -> Any:
        """Caption token ids for a batch of images, with open_clip's ``CoCa.generate``
        arguments and defaults (:func:`mindclip.generation.generate`)."""
        from ..generation import generate

        return generate(self, images, text, **kwargs)
