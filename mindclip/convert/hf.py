"""Hugging Face ``CLIPModel`` folders: config.json -> CLIPConfig, weights -> open_clip names
(and the image tower back, for the dual encoder's reverse conversion)."""
from __future__ import annotations

import re
from typing import Any, Dict

import numpy as np

from ..models.config import CLIPConfig

_LAYER = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_FIXED = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_LAYER_RE = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def hf_state_to_openclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename HF CLIP weights to open_clip's; q/k/v are packed into ``in_proj``."""
    out: Dict[str, np.ndarray] = {}
    qkv: Dict[str, Dict[str, np.ndarray]] = {}
    unknown = []
    for name, value in state.items():
        if name.endswith("position_ids"):
            continue
        if name in _FIXED:
            out[_FIXED[name]] = value
        elif name == "text_projection.weight":
            out["text_projection"] = value.T.copy()
        elif name == "visual_projection.weight":
            out["visual.proj"] = value.T.copy()
        elif _LAYER_RE.match(name):
            tower, idx, sub, kind = _LAYER_RE.match(name).groups()
            prefix = ("" if tower == "text_model" else "visual.") + f"transformer.resblocks.{idx}."
            if sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{prefix}attn.in_proj_{kind}", {})[sub[-6]] = value
            elif sub in _LAYER:
                out[f"{prefix}{_LAYER[sub]}.{kind}"] = value
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"Hugging Face checkpoint has weights a CLIP model does not: {unknown}")
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{name}: q/k/v projections incomplete (have {sorted(parts)})")
        out[name] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def _activation(*configs: Dict[str, Any]) -> bool:
    """quick_gelu (True) or exact gelu (False), which every tower given must share."""
    acts = {c.get("hidden_act", "quick_gelu") for c in configs}
    if len(acts) != 1 or acts - {"quick_gelu", "gelu"}:
        raise ValueError(f"unsupported activation(s) {sorted(acts)}: need one of quick_gelu/gelu "
                         "shared by both towers")
    return acts == {"quick_gelu"}


def _check_eps(tower: str, cfg: Dict[str, Any]) -> None:
    eps = cfg.get("layer_norm_eps", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"{tower}.layer_norm_eps={eps}: mindclip's LayerNorm uses 1e-5")


def hf_vision_cfg(vision: Dict[str, Any]) -> Dict[str, Any]:
    """A HF ``CLIPVisionConfig`` dict -> our ``vision_cfg`` dict."""
    _check_eps("vision_config", vision)
    v_width, v_heads = vision.get("hidden_size", 768), vision.get("num_attention_heads", 12)
    return {
        "image_size": vision.get("image_size", 224),
        "patch_size": vision.get("patch_size", 32),
        "width": v_width,
        "layers": vision.get("num_hidden_layers", 12),
        "head_width": v_width // v_heads,
        "mlp_ratio": vision.get("intermediate_size", 3072) / v_width,
    }


def hf_vision_config_dict(vision_cfg, quick_gelu: bool, projection_dim: int) -> Dict[str, Any]:
    """Our ViT config -> a HF ``CLIPVisionConfig`` dict (the reverse of :func:`hf_vision_cfg`)."""
    return {"model_type": "clip_vision_model", "hidden_size": vision_cfg.width,
            "intermediate_size": int(round(vision_cfg.width * vision_cfg.mlp_ratio)),
            "num_hidden_layers": vision_cfg.layers, "num_attention_heads": vision_cfg.heads,
            "image_size": vision_cfg.image_size, "patch_size": vision_cfg.patch_size,
            "hidden_act": "quick_gelu" if quick_gelu else "gelu", "layer_norm_eps": 1e-5,
            "projection_dim": projection_dim, "num_channels": 3}


def openclip_vision_to_hf(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """open_clip ViT weights (``visual.*``) -> HF ``vision_model.*`` + ``visual_projection``;
    the inverse of :func:`hf_state_to_openclip` on the image tower."""
    fixed = {v: k for k, v in _FIXED.items() if k.startswith("vision_model.")}
    layer = {v: k for k, v in _LAYER.items()}
    out: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        if name in fixed:
            out[fixed[name]] = value
        elif name == "visual.proj":
            out["visual_projection.weight"] = value.T.copy()
        else:
            m = re.match(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$", name)
            if not m:
                raise ValueError(f"not a ViT image-tower weight: {name}")
            prefix = f"vision_model.encoder.layers.{m.group(1)}."
            sub = m.group(2)
            if sub.startswith("attn.in_proj_"):
                kind = sub[len("attn.in_proj_"):]
                for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.copy()
            else:
                module, kind = sub.rsplit(".", 1)
                if module not in layer:
                    raise ValueError(f"not a ViT image-tower weight: {name}")
                out[f"{prefix}{layer[module]}.{kind}"] = value
    return out


def hf_config_to_clip(config: Dict[str, Any]) -> CLIPConfig:
    """Map a HF ``CLIPConfig`` dict to ours; refuses settings our towers do not implement."""
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    quick_gelu = _activation(text, vision)
    _check_eps("text_config", text)
    t_width = text.get("hidden_size", 512)
    return CLIPConfig.from_dict({
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": quick_gelu,
        "vision_cfg": hf_vision_cfg(vision),
        "text_cfg": {
            "context_length": text.get("max_position_embeddings", 77),
            "vocab_size": text.get("vocab_size", 49408),
            "width": t_width,
            "heads": text.get("num_attention_heads", 8),
            "layers": text.get("num_hidden_layers", 12),
            "mlp_ratio": text.get("intermediate_size", 2048) / t_width,
        },
    })
