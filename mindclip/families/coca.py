"""The CoCa family (open_clip's ``CoCa``): CLIP towers with an attentional pooler and a class
token, a multimodal decoder; its text processor is CLIP's BPE (or the HF tower's tokenizer),
its objective contrastive + captioning, its batch the plain caption tokens (the decoder's
targets are the same tokens shifted by one), its converter open_clip's layout. It generates
text: ``model.generate``, the ``image_to_text`` pipeline, caption metrics in ``eval``."""
from __future__ import annotations

from typing import Any, Dict

from ..convert.coca import CoCaConverter
from ..losses import ContrastiveObjective, logit_scale_bounds
from ..models.coca import CoCaConfig, CoCaModel
from ..registry import register
from .base import Family
from .clip import caption_batch, clip_tokenizer
from .coca_objective import CoCaObjective


def coca_objective(model: CoCaModel, run_cfg: Dict[str, Any], rank: int = 0,
                   world: int = 1) -> CoCaObjective:
    loss_cfg = run_cfg["loss"]
    if (loss_cfg["type"] or "coca") != "coca":
        raise ValueError(f"the CoCa family trains with its contrastive + captioning loss "
                         f"(loss.type: coca), not {loss_cfg['type']!r}")
    bounds = logit_scale_bounds(loss_cfg.get("clamp_logit_scale"), ContrastiveObjective.DEFAULT_BOUNDS)
    return CoCaObjective(model, loss_cfg.get("weights"), loss_cfg["local_loss"],
                         loss_cfg["gather_with_grad"], rank, world, bounds)


COCA_FAMILY = register("family", "coca")(Family(
    name="coca", config_class=CoCaConfig, model_class=CoCaModel, get_tokenizer=clip_tokenizer,
    build_objective=coca_objective, build_batch=caption_batch, converters=(CoCaConverter(),),
    claims=CoCaConfig.claims, generates=True))

__all__ = ["COCA_FAMILY"]
