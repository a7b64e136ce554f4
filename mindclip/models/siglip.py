"""SigLIP and SigLIP 2 (Zhai et al. 2023; Tschannen et al. 2025) as open_clip builds them: a
timm SigLIP ViT image tower (MAP head), open_clip's text transformer with SigLIP's options
(bidirectional, last-token pooling, projection with bias, eps 1e-6) or a Hugging Face text
tower, a learned temperature and a learned bias: image-text scores are independent sigmoids
``sigmoid(exp(logit_scale) * cos + logit_bias)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import mindspore as ms
from mindspore import Tensor

from .clip import CLIPModel
from .config import CLIPConfig, TimmVisionCfg

# SigLIP's and open_clip's images: mean 0.5, std 0.5 per channel (its "inception" statistics)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
INIT_LOGIT_SCALE = math.log(10.0)
INIT_LOGIT_BIAS = -10.0


def _default_vision() -> TimmVisionCfg:
    return TimmVisionCfg(timm_model_name="vit_base_patch16_siglip_224", timm_pool="map",
                         timm_proj="none")


@dataclass
class SigLIPConfig(CLIPConfig):
    """open_clip's SigLIP model config (``ViT-B-16-SigLIP.json`` ...): a :class:`TimmVisionCfg`
    image tower, a :class:`CLIPTextCfg` text tower, ``init_logit_bias`` (-10)."""

    embed_dim: int = 768
    vision_cfg: TimmVisionCfg = field(default_factory=_default_vision)
    init_logit_bias: Optional[float] = INIT_LOGIT_BIAS

    def __post_init__(self):
        if self.init_logit_bias is None:
            raise ValueError("a SigLIP model needs init_logit_bias (its learned bias)")
        if self.quick_gelu:
            raise ValueError("SigLIP towers use GELU (tanh-approximated where the config says); "
                             "quick_gelu is not one of their options")

    @staticmethod
    def claims(data: Dict[str, Any]) -> bool:
        """Whether an open_clip model config (a dict) is a SigLIP one: it has SigLIP's learned
        bias (``init_logit_bias``), whatever its towers (open_clip's own test,
        ``'siglip' in name``, reads the name, not the model)."""
        return data.get("init_logit_bias") is not None and "multimodal_cfg" not in data


class SigLIPModel(CLIPModel):
    """SigLIP as a MindSpore Cell: CLIP's calls (``encode_image``, ``encode_text``,
    ``model(images, tokens)``) and ``logit_bias`` besides ``logit_scale`` (initialised to
    ln 10 and -10, SigLIP's values)."""

    family = "siglip"
    image_mean = SIGLIP_MEAN
    image_std = SIGLIP_STD

    def __init__(self, config: SigLIPConfig):
        super().__init__(config)
        self.logit_scale.set_data(Tensor(INIT_LOGIT_SCALE, ms.float32))
