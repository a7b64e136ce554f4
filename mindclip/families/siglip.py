"""The SigLIP family (SigLIP, SigLIP 2): open_clip's SigLIP architectures and Hugging Face's
``SiglipModel``; its text processor is the model's SentencePiece / Gemma tokenizer through
open_clip's cleaning, its objective the sigmoid loss with the model's learned bias, its label
scores independent sigmoids, its converter open_clip's and Hugging Face's layouts."""
from __future__ import annotations

from typing import Any, Dict

from ..convert.siglip import SigLIPConverter
from .scoring import sigmoid_scores
from ..losses import ContrastiveObjective
from ..models.siglip import SigLIPConfig, SigLIPModel
from ..registry import register
from .base import Family
from .clip import caption_batch, clip_tokenizer, contrastive_objective


def sigmoid_objective(model: SigLIPModel, run_cfg: Dict[str, Any], rank: int = 0,
                      world: int = 1) -> ContrastiveObjective:
    """The sigmoid loss over every rank's texts (``loss.type`` null or ``siglip``)."""
    if (run_cfg["loss"]["type"] or "siglip") != "siglip":
        raise ValueError(f"the SigLIP family trains with the sigmoid loss (loss.type: siglip), "
                         f"not {run_cfg['loss']['type']!r}")
    return contrastive_objective(model, run_cfg, rank, world, default_loss="siglip")


SIGLIP_FAMILY = register("family", "siglip")(Family(
    name="siglip", config_class=SigLIPConfig, model_class=SigLIPModel, get_tokenizer=clip_tokenizer,
    build_objective=sigmoid_objective, build_batch=caption_batch, converters=(SigLIPConverter(),),
    label_scores=sigmoid_scores, claims=SigLIPConfig.claims))

__all__ = ["SIGLIP_FAMILY"]
