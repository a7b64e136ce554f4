"""The DeCLIP family: DeCLIPModel (CLIP towers + SimSiam and MLM heads), CLIP's BPE with
DeCLIP's ids (mask 49406, sot 49407, eot 49408), the four-term objective with its
nearest-neighbour memory, the two-view batch (masked caption + EDA caption) and the
converter of DeCLIP's PyTorch checkpoints."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..convert.declip import DeCLIPConverter
from ..data.batch import SampleBuilder
from ..data.text_augment import check_wordnet, default_max_positions, eda, mlm_mask
from ..losses import logit_scale_bounds
from ..models.declip import DeCLIPConfig, DeCLIPModel
from ..registry import register
from ..tokenizer import CLIPTokenizer
from .base import Family
from .declip_objective import LOGIT_SCALE_BOUNDS, DeCLIPObjective

MASK_TOKEN = "<|mask|>"


def declip_tokenizer(config: DeCLIPConfig, folder: Optional[str] = None) -> CLIPTokenizer:
    """OpenAI's BPE with DeCLIP's vocabulary order (49409 ids)."""
    del folder  # the vocabulary is bundled
    tokenizer = CLIPTokenizer(context_length=config.text_cfg.context_length, mask_token=MASK_TOKEN)
    if tokenizer.vocab_size != config.text_cfg.vocab_size:
        raise ValueError(f"a DeCLIP text tower has {tokenizer.vocab_size} token ids, this "
                         f"architecture {config.text_cfg.vocab_size}")
    return tokenizer


def declip_objective(model: DeCLIPModel, run_cfg: Dict[str, Any], rank: int = 0,
                     world: int = 1) -> DeCLIPObjective:
    loss_cfg = run_cfg["loss"]
    bounds = logit_scale_bounds(loss_cfg.get("clamp_logit_scale"), LOGIT_SCALE_BOUNDS)
    return DeCLIPObjective(model, loss_cfg.get("weights"), int(loss_cfg["memory_size"]),
                           gather_with_grad=loss_cfg["gather_with_grad"], rank=rank,
                           world_size=world, logit_scale_bounds=bounds,
                           memory_seed=int(run_cfg.get("seed") or 0))


class DeCLIPBatch(SampleBuilder):
    """Per sample: the MLM-masked caption, its selected positions and original ids, and an
    EDA-augmented copy (never masked); the loader adds the second image view."""

    views = 2

    def __init__(self, tokenizer: CLIPTokenizer, mlm_probability: float = 0.15,
                 caption_augment: str = "eda", max_positions: Optional[int] = None):
        super().__init__(tokenizer, ("tokens", "mlm_positions", "mlm_targets", "tokens_aug"))
        if caption_augment == "eda":
            check_wordnet()
        self.caption_augment = caption_augment
        self.probability = mlm_probability
        self.max_positions = max_positions or default_max_positions(tokenizer.context_length,
                                                                    mlm_probability)
        self.special_ids = (tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.mask_token_id)

    def __call__(self, caption: str, rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        tok = self.processor
        augmented = eda(caption, rng, self.caption_augment)
        ids = tok([caption])[0]
        masked, positions, targets = mlm_mask(ids, rng, tok.mask_token_id, tok.vocab_size,
                                              self.special_ids, self.probability,
                                              self.max_positions)
        return masked, positions, targets, tok([augmented])[0]


def declip_batch(model: DeCLIPModel, run_cfg: Dict[str, Any]) -> DeCLIPBatch:
    loss_cfg = run_cfg["loss"]
    return DeCLIPBatch(declip_tokenizer(model.config), float(loss_cfg["mlm_probability"]),
                       run_cfg["train_dataset"].get("caption_augment") or "eda",
                       loss_cfg.get("mlm_max_positions"))


DECLIP_FAMILY = register("family", "declip")(Family(
    name="declip", config_class=DeCLIPConfig, model_class=DeCLIPModel,
    get_tokenizer=declip_tokenizer, build_objective=declip_objective,
    build_batch=declip_batch, converters=(DeCLIPConverter(),)))

__all__ = ["DECLIP_FAMILY", "DeCLIPBatch", "declip_tokenizer"]
