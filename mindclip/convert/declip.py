"""The DeCLIP family's converter: DeCLIP's PyTorch checkpoints (``ckpt.pth.tar``,
``{'model': {'module.…'}, 'optimizer', 'last_iter'}``, fp32 or fp16) -> mindclip files.

The architecture comes from the shapes (ViT vs RN50 from ``visual.proj`` vs ``visual.attnpool``,
the embedding size, so DeCLIP-88M's 3072 is found, the SimSiam widths); both towers use
QuickGELU. By default the training heads (SimSiam projector/predictor, MLM head) are kept so
that training can continue; ``towers_only`` writes a CLIP-family inference file instead,
with the vocabulary moved to OpenAI's ids (DeCLIP's 49407/49408 become 49406/49407 and its
mask row is dropped), which every CLIP front door and OpenAI's tokenizer then use as is.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..families.base import get_family
from ..models.config import CLIPConfig
from ..models.declip import DeCLIPConfig
from ..factory import check_state_dict, get_model_config
from .openclip_family import expected_shapes
from .infer import infer_config
from .naming import openclip_to_mindclip, strip_prefix
from .sources import SourceCheckpoint

log = logging.getLogger(__name__)

TEXT_PREFIX = "encode_text."
HEADS = ("projector.", "predictor.", "text_label_predictor.")
DECLIP_MASK_ID = 49406  # DeCLIP: mask 49406, sot 49407, eot 49408; OpenAI: sot 49406, eot 49407


def is_declip_state(tensors: Dict[str, np.ndarray]) -> bool:
    return f"{TEXT_PREFIX}token_embedding.weight" in strip_prefix(tensors)


def declip_to_openclip(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """DeCLIP names -> open_clip names (heads kept under their own names)."""
    out = {}
    for name, value in strip_prefix(tensors).items():
        if name.startswith("visual.fc."):
            # RN50's fc is used only for inputs other than 224 px (a 7x7 last map), never
            # by the released models; the attention pool is the image head.
            log.warning("dropped %s: DeCLIP's RN50 uses it only when the input is not 224 px", name)
            continue
        if name.startswith(TEXT_PREFIX):
            name = name[len(TEXT_PREFIX):]
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)  # DeCLIP-88M trains (and saves) in fp16
        if name == "logit_scale":
            value = value.reshape(())  # [1] in DeCLIP, a scalar here
        out[name] = value
    return out


def _to_openai_vocab(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Drop DeCLIP's mask row so that sot/eot land on OpenAI's ids."""
    table = tensors["text.token_embedding.embedding_table"]
    keep = np.r_[0:DECLIP_MASK_ID, DECLIP_MASK_ID + 1:table.shape[0]]
    return {**tensors, "text.token_embedding.embedding_table": table[keep]}


def convert_declip(source: SourceCheckpoint, model_name: Optional[str] = None,
                   towers_only: bool = False) -> Tuple[Dict[str, np.ndarray], Any]:
    """``(mindclip tensors, architecture)`` of a DeCLIP checkpoint, verified against a model
    of that architecture (every weight present, none extra, all shapes equal)."""
    state = declip_to_openclip(source.tensors)
    if model_name is not None:
        config = get_model_config(model_name)
        if not isinstance(config, DeCLIPConfig):
            raise ValueError(f"{model_name} is not a DeCLIP architecture")
    else:
        towers = infer_config(state, quick_gelu=True).to_dict()
        heads = {}
        if "projector.linear1.weight" in state:
            heads = {"simsiam_dim": int(state["projector.linear1.weight"].shape[0]),
                     "simsiam_hidden": int(state["predictor.linear1.weight"].shape[0])}
        config = DeCLIPConfig.from_dict({**towers, **heads})
    tensors = openclip_to_mindclip(state)
    if not towers_only:
        check_state_dict(expected_shapes(get_family("declip"), config), tensors, source.path)
        return tensors, config
    tensors = _to_openai_vocab({k: v for k, v in tensors.items() if not k.startswith(HEADS)})
    clip_dict = {k: v for k, v in config.to_dict().items()
                 if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")}
    clip_dict["text_cfg"] = {**clip_dict["text_cfg"], "vocab_size": config.text_cfg.vocab_size - 1}
    clip_config = CLIPConfig.from_dict(clip_dict)
    check_state_dict(expected_shapes(get_family("clip"), clip_config), tensors, source.path)
    return tensors, clip_config


class DeCLIPConverter:
    """The DeCLIP family's converter, as ``tools/convert_weight.py`` uses it."""

    family = "declip"
    sources = ("declip",)

    @staticmethod
    def detect(source: SourceCheckpoint) -> bool:
        return is_declip_state(source.tensors)

    @staticmethod
    def convert(source: SourceCheckpoint, src: str = "auto", model_name: Optional[str] = None,
                towers_only: bool = False, **_: Any) -> Tuple[Dict[str, np.ndarray], Any]:
        if not is_declip_state(source.tensors):
            raise ValueError(f"{source.path} is not a DeCLIP checkpoint (no "
                             f"{TEXT_PREFIX}token_embedding.weight)")
        return convert_declip(source, model_name, towers_only)
