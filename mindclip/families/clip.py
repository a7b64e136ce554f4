"""The CLIP family (OpenAI / OpenCLIP architectures): CLIPModel, the BPE tokenizer, the
contrastive objective (CLIP or SigLIP loss, logit scale clamped to [0, ln 100]), the plain
caption batch and the converter of OpenAI, open_clip, Hugging Face and MindFormers layouts."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..convert.converter import ClipConverter
from ..data.batch import SampleBuilder
from ..losses import ContrastiveObjective, logit_scale_bounds
from ..models.clip import CLIPModel
from ..models.config import CLIPConfig
from ..registry import build, register
from ..models.store import fetch_tokenizer
from ..tokenizer import CLIPTokenizer, is_tokenizer_folder
from ..tokenizer.openclip_hf import OpenCLIPHFTokenizer, tokenizer_options
from .base import Family


def clip_tokenizer(config: CLIPConfig, folder: Optional[str] = None) -> Any:
    """CLIP's BPE (OpenAI's vocabulary, bundled), or, for a text config naming a Hugging
    Face tokenizer (``hf_tokenizer_name``), open_clip's HF tokenizer on its files: those
    saved beside the weights, else the Hugging Face cache (fetched where online)."""
    text = config.text_cfg
    if not text.hf_tokenizer_name:
        return CLIPTokenizer(context_length=text.context_length)
    files = folder if folder and is_tokenizer_folder(folder) else fetch_tokenizer(text.hf_tokenizer_name)
    if files is None:
        raise FileNotFoundError(
            f"this model's tokenizer is Hugging Face's {text.hf_tokenizer_name!r}: its files "
            "(tokenizer.json, or vocab.txt / vocab.json + merges.txt) are neither beside the "
            "weights nor in the Hugging Face cache (HF_HOME); load the model from its pretrained "
            "name or folder, or put the tokenizer in the cache")
    return OpenCLIPHFTokenizer(files, context_length=text.context_length, **tokenizer_options(text))


def contrastive_objective(model: CLIPModel, run_cfg: Dict[str, Any], rank: int = 0,
                          world: int = 1, default_loss: str = "clip") -> ContrastiveObjective:
    """``loss.type`` (``clip`` | ``siglip``; null: ``default_loss``) over the model's two
    towers."""
    import mindspore as ms

    loss_cfg = run_cfg["loss"]
    loss_type = loss_cfg["type"] or default_loss
    loss_fn = build("loss", loss_type, local_loss=loss_cfg["local_loss"],
                    gather_with_grad=loss_cfg["gather_with_grad"], rank=rank, world_size=world)
    init_scale = getattr(loss_fn, "INIT_LOGIT_SCALE", None)
    from_scratch = not (run_cfg["model"].get("pretrained") or run_cfg.get("load_checkpoint"))
    if init_scale is not None and from_scratch:
        # SigLIP starts at a temperature of 10 (a resumed run restores its own value later).
        model.logit_scale.set_data(ms.Tensor(init_scale, ms.float32))
    bounds = logit_scale_bounds(loss_cfg.get("clamp_logit_scale"), ContrastiveObjective.DEFAULT_BOUNDS)
    return ContrastiveObjective(model, loss_fn, loss_type, bounds)


def caption_batch(model: CLIPModel, run_cfg: Dict[str, Any]) -> SampleBuilder:
    del run_cfg
    return SampleBuilder(clip_tokenizer(model.config), ("tokens",))


CLIP_FAMILY = register("family", "clip")(Family(
    name="clip", config_class=CLIPConfig, model_class=CLIPModel, get_tokenizer=clip_tokenizer,
    build_objective=contrastive_objective, build_batch=caption_batch,
    converters=(ClipConverter(),)))
