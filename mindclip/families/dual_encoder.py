"""The dual-encoder family (Hugging Face's VisionTextDualEncoderModel): a CLIP ViT image tower,
a BERT/RoBERTa text tower, its Hugging Face tokenizer folder, HF's loss (symmetric
cross-entropy, logit scale not clamped unless ``loss.clamp_logit_scale`` says so), the
``input_ids`` + ``attention_mask`` caption columns and the HF folder converter."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..convert.dual_encoder import DualEncoderConverter
from ..data.batch import SampleBuilder
from ..losses import ClipLoss, ContrastiveObjective, logit_scale_bounds
from ..models.dual_encoder import DualEncoderConfig, DualEncoderModel
from ..registry import register
from ..tokenizer.hf import HFTokenizer, is_tokenizer_folder
from .base import Family


def dual_encoder_tokenizer(config: DualEncoderConfig, folder: Optional[str] = None) -> HFTokenizer:
    """The tokenizer saved with the model (its folder), padded to ``max_seq_length``."""
    if folder is None or not is_tokenizer_folder(folder):
        where = f" ({folder} has no tokenizer files)" if folder else ""
        raise ValueError("a dual encoder's tokenizer is the Hugging Face tokenizer folder saved "
                         f"with its weights{where}: load the model from its converted folder "
                         "(create_model(pretrained=folder)) or call get_tokenizer(folder)")
    return HFTokenizer(folder, config.max_seq_length)


def dual_encoder_objective(model: DualEncoderModel, run_cfg: Dict[str, Any], rank: int = 0,
                           world: int = 1) -> ContrastiveObjective:
    loss_cfg = run_cfg["loss"]
    if (loss_cfg["type"] or "clip") != "clip":
        raise ValueError(f"the dual encoder trains with HF's CLIP loss (loss.type: clip), "
                         f"not {loss_cfg['type']!r}")
    loss_fn = ClipLoss(local_loss=loss_cfg["local_loss"], gather_with_grad=loss_cfg["gather_with_grad"],
                       rank=rank, world_size=world)
    bounds = logit_scale_bounds(loss_cfg.get("clamp_logit_scale"), None)  # HF: no clamp
    return ContrastiveObjective(model, loss_fn, "clip", bounds)


def dual_encoder_batch(model: DualEncoderModel, run_cfg: Dict[str, Any]) -> SampleBuilder:
    del run_cfg
    folder = getattr(model, "source_dir", None)
    return SampleBuilder(dual_encoder_tokenizer(model.config, folder), ("input_ids", "attention_mask"))


DUAL_ENCODER_FAMILY = register("family", "dual_encoder")(Family(
    name="dual_encoder", config_class=DualEncoderConfig, model_class=DualEncoderModel,
    get_tokenizer=dual_encoder_tokenizer, build_objective=dual_encoder_objective,
    build_batch=dual_encoder_batch, converters=(DualEncoderConverter(),)))

__all__ = ["DUAL_ENCODER_FAMILY", "dual_encoder_tokenizer"]
