"""Read a CLIP architecture off the tensor shapes of an open_clip-named state dict.

Shapes fix every size but two things: the attention head width (OpenAI and open_clip use
64 everywhere, which we assume) and the activation (QuickGELU or GELU), which the caller
must decide.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..models.config import CLIPConfig
from ..models.diff import config_differences
from ..factory import get_model_config, list_models, model_family


def _count(state: Dict[str, np.ndarray], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def infer_config(state: Dict[str, np.ndarray], quick_gelu: bool, head_width: int = 64) -> CLIPConfig:
    """Architecture of an open_clip/OpenAI state dict (see module doc for the assumptions)."""
    try:
        proj_bias = "text_projection.bias" in state  # a Linear projection (open_clip, DeCLIP)
        embed_dim = (state["text_projection.weight"].shape[0] if proj_bias
                     else state["text_projection"].shape[1])
        t_width = state["ln_final.weight"].shape[0]
        text_cfg = {
            "context_length": state["positional_embedding"].shape[0],
            "vocab_size": state["token_embedding.weight"].shape[0],
            "width": t_width,
            "heads": max(t_width // head_width, 1),
            "layers": _count(state, "transformer.resblocks."),
            "mlp_ratio": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / t_width,
            "proj_bias": proj_bias,
        }
        if "visual.proj" in state:
            width, _, patch, _ = state["visual.conv1.weight"].shape
            grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            vision_cfg = {
                "layers": _count(state, "visual.transformer.resblocks."),
                "width": width, "patch_size": patch, "image_size": patch * grid,
                "head_width": head_width,
                "mlp_ratio": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
            }
        else:
            grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision_cfg = {
                "layers": [_count(state, f"visual.layer{i}.") for i in range(1, 5)],
                "width": state["visual.layer1.0.conv1.weight"].shape[0],
                "patch_size": None, "image_size": grid * 32, "head_width": head_width,
            }
    except KeyError as exc:
        raise ValueError(f"cannot infer a CLIP architecture: weight {exc} is missing") from None
    return CLIPConfig.from_dict({"embed_dim": embed_dim, "quick_gelu": quick_gelu,
                                 "vision_cfg": vision_cfg, "text_cfg": text_cfg})


def matching_model_names(config: Any, ignore_activation: bool = False) -> List[str]:
    """Built-in architecture names equal to ``config`` (a CLIP one optionally whatever the
    activation), among the architectures of the same config class."""
    out = []
    for name in list_models():
        if model_family(name).config_class is not type(config):
            continue
        cand = get_model_config(name)
        if ignore_activation:
            cand.quick_gelu = config.quick_gelu
        if not config_differences(cand.to_dict(), config.to_dict()):
            out.append(name)
    return out
