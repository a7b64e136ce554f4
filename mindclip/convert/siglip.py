"""The SigLIP family's converter, both ways: open_clip SigLIP state dicts and Hub folders (the
timm image tower under ``visual.trunk.``, the text tower under ``text.``) and Hugging Face
``SiglipModel`` folders (``vision_model.*``, ``text_model.*``, ``logit_scale``, ``logit_bias``).

open_clip's names are the pivot, as for CLIP: a Hugging Face state dict is renamed to them
(q/k/v packed, the MAP head's packed in-projection split into timm's ``q`` and ``kv``), and
mindclip's names differ from open_clip's only by MindSpore's norm suffixes.
SigLIP 2's NaFlex checkpoints (``Siglip2Model``: variable resolution, a linear patch
embedding) are refused: the fixed-resolution SigLIP 2 releases are ``SiglipModel`` folders.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..factory import get_model_config
from ..models.config import CLIPTextCfg, TimmVisionCfg
from ..models.siglip import SigLIPConfig
from ..models.weights_io import write_safetensors
from .hf import hf_state_to_openclip
from .naming import strip_prefix
from .openclip_family import OpenClipFamilyConverter, copy_tokenizer
from .sources import SourceCheckpoint

HF_MODEL_TYPE = "siglip"
_ACTS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
# transformers' SiglipVisionConfig / SiglipTextConfig defaults (config.json omits defaults)
_HF_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "image_size": 224, "patch_size": 16,
              "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3}
_HF_TEXT = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072,
            "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 64,
            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "projection_size": None}

# (Hugging Face, open_clip) names of the image tower, ``{}`` a block index
_VISION_NAMES = [
    ("vision_model.embeddings.patch_embedding.{p}", "visual.trunk.patch_embed.proj.{p}"),
    ("vision_model.post_layernorm.{p}", "visual.trunk.norm.{p}"),
    ("vision_model.head.layernorm.{p}", "visual.trunk.attn_pool.norm.{p}"),
    ("vision_model.head.mlp.fc1.{p}", "visual.trunk.attn_pool.mlp.fc1.{p}"),
    ("vision_model.head.mlp.fc2.{p}", "visual.trunk.attn_pool.mlp.fc2.{p}"),
    ("vision_model.head.attention.out_proj.{p}", "visual.trunk.attn_pool.proj.{p}"),
    ("vision_model.encoder.layers.{i}.layer_norm1.{p}", "visual.trunk.blocks.{i}.norm1.{p}"),
    ("vision_model.encoder.layers.{i}.layer_norm2.{p}", "visual.trunk.blocks.{i}.norm2.{p}"),
    ("vision_model.encoder.layers.{i}.self_attn.out_proj.{p}", "visual.trunk.blocks.{i}.attn.proj.{p}"),
    ("vision_model.encoder.layers.{i}.mlp.fc1.{p}", "visual.trunk.blocks.{i}.mlp.fc1.{p}"),
    ("vision_model.encoder.layers.{i}.mlp.fc2.{p}", "visual.trunk.blocks.{i}.mlp.fc2.{p}"),
]


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
                      .replace(r"\{p\}", r"(?P<p>weight|bias)") + "$")


_HF_TO_OC = [(_pattern(hf), oc) for hf, oc in _VISION_NAMES]
_OC_TO_HF = [(_pattern(oc), hf) for hf, oc in _VISION_NAMES]


def _rename(name: str, table) -> Optional[str]:
    for pattern, template in table:
        m = pattern.match(name)
        if m:
            return template.format(**m.groupdict())
    return None


def hf_siglip_vision_to_timm(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF ``vision_model.*`` -> open_clip's ``visual.trunk.*`` (timm's names)."""
    out: Dict[str, np.ndarray] = {}
    qkv: Dict[str, Dict[str, np.ndarray]] = {}
    unknown = []
    for name, value in state.items():
        m = re.match(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", name)
        if m:
            qkv.setdefault(f"visual.trunk.blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = value
        elif name == "vision_model.embeddings.position_embedding.weight":
            out["visual.trunk.pos_embed"] = value[None]
        elif name == "vision_model.head.probe":
            out["visual.trunk.attn_pool.latent"] = value
        elif name.startswith("vision_model.head.attention.in_proj_"):
            kind = name.rsplit("_", 1)[1]
            d = value.shape[0] // 3
            out[f"visual.trunk.attn_pool.q.{kind}"] = value[:d].copy()
            out[f"visual.trunk.attn_pool.kv.{kind}"] = value[d:].copy()
        elif name.endswith("position_ids"):
            continue
        elif _rename(name, _HF_TO_OC):
            out[_rename(name, _HF_TO_OC)] = value
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"Hugging Face SigLIP checkpoint has image weights mindclip does not know: {unknown}")
    for name, parts in qkv.items():
        out[name] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def timm_siglip_vision_to_hf(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The inverse of :func:`hf_siglip_vision_to_timm`."""
    out: Dict[str, np.ndarray] = {}
    pool_in: Dict[str, Dict[str, np.ndarray]] = {}
    for name, value in state.items():
        m = re.match(r"^visual\.trunk\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if m:
            for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                out[f"vision_model.encoder.layers.{m.group(1)}.self_attn.{part}_proj.{m.group(2)}"] = chunk.copy()
        elif name == "visual.trunk.pos_embed":
            out["vision_model.embeddings.position_embedding.weight"] = value[0]
        elif name == "visual.trunk.attn_pool.latent":
            out["vision_model.head.probe"] = value
        elif re.match(r"^visual\.trunk\.attn_pool\.(q|kv)\.(weight|bias)$", name):
            module, kind = name.split(".")[-2:]
            pool_in.setdefault(kind, {})[module] = value
        elif _rename(name, _OC_TO_HF):
            out[_rename(name, _OC_TO_HF)] = value
        else:
            raise ValueError(f"{name}: Hugging Face's SiglipModel has no such image weight "
                             "(a timm_proj head?)")
    for kind, parts in pool_in.items():
        out[f"vision_model.head.attention.in_proj_{kind}"] = np.concatenate([parts["q"], parts["kv"]], axis=0)
    return out


def hf_text_to_openclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF ``text_model.*`` -> open_clip's custom text layout (``text.*``)."""
    head = {k: state[k] for k in ("text_model.head.weight", "text_model.head.bias") if k in state}
    body = {k: v for k, v in state.items() if k not in head}
    out = {"text." + k: v for k, v in hf_state_to_openclip(body).items()}
    for k, v in head.items():
        out["text.text_projection." + k.rsplit(".", 1)[1]] = v
    return out


def _mlp_ratio(hidden: int, width: int) -> float:
    # the towers build int(width * mlp_ratio) units; the plain quotient can round below
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else ratio + 1e-9


def config_from_hf(config: Dict[str, Any], tokenizer_name: Optional[str] = None) -> SigLIPConfig:
    """A HF ``SiglipConfig`` dict -> :class:`SigLIPConfig` (refusing what is not built)."""
    if config.get("model_type") != HF_MODEL_TYPE:
        raise ValueError(f"model_type {config.get('model_type')!r}: only SiglipModel folders "
                         "('siglip') are implemented; SigLIP 2's NaFlex checkpoints "
                         "('siglip2', Siglip2Model) are not yet supported")
    v = dict(_HF_VISION, **(config.get("vision_config") or {}))
    t = dict(_HF_TEXT, **(config.get("text_config") or {}))
    for tower, cfg in (("vision_config", v), ("text_config", t)):
        if cfg["hidden_act"] not in _ACTS:
            raise ValueError(f"{tower}.hidden_act {cfg['hidden_act']!r}: valid are {sorted(_ACTS)}")
    if not v.get("vision_use_head", True):
        raise ValueError("vision_config.vision_use_head false: SigLIP without its MAP head is not implemented")
    projection = t["projection_size"] or t["hidden_size"]
    if projection != v["hidden_size"]:
        raise ValueError(f"text projection_size {projection} != vision hidden_size {v['hidden_size']}")
    text_act = {"approximate": "tanh"} if t["hidden_act"] == "gelu_pytorch_tanh" else None
    return SigLIPConfig(
        embed_dim=v["hidden_size"], custom_text=True,
        vision_cfg=TimmVisionCfg(
            image_size=v["image_size"], timm_pool="map", timm_proj="none",
            width=v["hidden_size"], layers=v["num_hidden_layers"], heads=v["num_attention_heads"],
            mlp_ratio=_mlp_ratio(v["intermediate_size"], v["hidden_size"]),
            patch_size=v["patch_size"], act=_ACTS[v["hidden_act"]], norm_eps=v["layer_norm_eps"]),
        text_cfg=CLIPTextCfg(
            context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"],
            width=t["hidden_size"], heads=t["num_attention_heads"], layers=t["num_hidden_layers"],
            mlp_ratio=_mlp_ratio(t["intermediate_size"], t["hidden_size"]),
            no_causal_mask=True, pool_type="last", proj_bias=True,
            norm_kwargs={"eps": t["layer_norm_eps"]}, act_kwargs=text_act,
            hf_tokenizer_name=tokenizer_name, tokenizer_kwargs={"clean": "hf_siglip"}))


def config_to_hf(config: SigLIPConfig) -> Dict[str, Any]:
    """:class:`SigLIPConfig` -> a HF ``SiglipConfig`` dict (what the reverse writes)."""
    arch, text = config.vision_cfg.arch, config.text_cfg
    if config.vision_cfg.timm_proj != "none" or text.hf_model_name or text.proj_type != "linear" \
            or not text.proj_bias or text.pool_type != "last" or not text.no_causal_mask:
        raise ValueError("Hugging Face's SiglipModel has no place for this architecture's image "
                         "projection / text tower options; convert it to open_clip's layout instead")
    text_tanh = (text.act_kwargs or {}).get("approximate") == "tanh"
    return {
        "model_type": HF_MODEL_TYPE, "architectures": ["SiglipModel"],
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": arch.width,
                          "intermediate_size": arch.mlp_dim, "num_hidden_layers": arch.layers,
                          "num_attention_heads": arch.heads, "image_size": arch.image_size,
                          "patch_size": arch.patch_size, "layer_norm_eps": arch.norm_eps,
                          "hidden_act": "gelu_pytorch_tanh" if arch.act == "gelu_tanh" else "gelu"},
        "text_config": {"model_type": "siglip_text_model", "vocab_size": text.vocab_size,
                        "hidden_size": text.width, "intermediate_size": int(text.width * text.mlp_ratio),
                        "num_hidden_layers": text.layers, "num_attention_heads": text.heads,
                        "max_position_embeddings": text.context_length,
                        "layer_norm_eps": text.norm_eps, "projection_size": config.embed_dim,
                        "hidden_act": "gelu_pytorch_tanh" if text_tanh else "gelu"},
    }


def _tokenizer_name(source: SourceCheckpoint) -> str:
    return source.raw_config.get("_name_or_path") or os.path.basename(os.path.normpath(source.path))


class SigLIPConverter(OpenClipFamilyConverter):
    """The SigLIP family's converter, as the registry and ``tools/convert_weight.py`` use it."""

    family = "siglip"
    config_class = SigLIPConfig
    # SigLIP's learned bias, not its MAP head: PE-Core's CLIP towers pool with one too
    marker_keys = ("logit_bias",)
    example = "ViT-B-16-SigLIP"
    sources = ("open_clip", "hf", "mindclip")

    @classmethod
    def detect(cls, source: SourceCheckpoint) -> bool:
        if source.kind == "hf_dir":
            return (source.raw_config or {}).get("model_type") in (HF_MODEL_TYPE, "siglip2")
        return super().detect(source)

    @classmethod
    def convert(cls, source: SourceCheckpoint, src: str = "auto", model_name: Optional[str] = None,
                **_: Any) -> Tuple[Dict[str, np.ndarray], SigLIPConfig]:
        if source.kind != "hf_dir":
            return super().convert(source, src, model_name)
        tensors = strip_prefix(source.tensors)
        config = get_model_config(model_name) if model_name else config_from_hf(
            source.raw_config, _tokenizer_name(source))
        state = {**hf_siglip_vision_to_timm({k: v for k, v in tensors.items() if k.startswith("vision_model.")}),
                 **hf_text_to_openclip({k: v for k, v in tensors.items() if k.startswith("text_model.")}),
                 **{k: tensors[k] for k in ("logit_scale", "logit_bias") if k in tensors}}
        return cls.finish(state, config, source.path)

    @classmethod
    def reverse(cls, ms_path: str, out_path: str, model_name: Optional[str] = None,
                layout: str = "open_clip") -> str:
        """A mindclip SigLIP checkpoint -> an open_clip folder or, with ``layout="hf"``, a
        folder ``SiglipModel.from_pretrained`` loads."""
        state, config, source_dir, preprocess = cls.read_ms(ms_path, model_name)
        if layout != "hf":
            if isinstance(config.vision_cfg, TimmVisionCfg) and not config.vision_cfg.timm_model_name:
                raise ValueError("open_clip builds a timm image tower from its timm_model_name; "
                                 "this architecture has none (it came from a Hugging Face folder): "
                                 "write it with --reverse_layout hf")
            return cls.write_openclip(state, config, out_path, source_dir, preprocess)
        hf = {**timm_siglip_vision_to_hf({k: v for k, v in state.items() if k.startswith("visual.")}),
              **_openclip_text_to_hf(state),
              "logit_scale": state["logit_scale"].reshape(1), "logit_bias": state["logit_bias"].reshape(1)}
        os.makedirs(out_path, exist_ok=True)
        with open(os.path.join(out_path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(config), f, indent=2)
        write_safetensors(os.path.join(out_path, "model.safetensors"), hf, metadata={"format": "pt"})
        copy_tokenizer(source_dir, out_path)
        return out_path


def _openclip_text_to_hf(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """open_clip's ``text.*`` (SigLIP text options) -> HF ``text_model.*``."""
    layer = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
             "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
    fixed = {"text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
             "text.positional_embedding": "text_model.embeddings.position_embedding.weight",
             "text.ln_final.weight": "text_model.final_layer_norm.weight",
             "text.ln_final.bias": "text_model.final_layer_norm.bias",
             "text.text_projection.weight": "text_model.head.weight",
             "text.text_projection.bias": "text_model.head.bias"}
    out: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not name.startswith("text."):
            continue
        if name in fixed:
            out[fixed[name]] = value
            continue
        m = re.match(r"^text\.transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$", name)
        if not m:
            raise ValueError(f"{name}: not a SigLIP text-tower weight")
        prefix = f"text_model.encoder.layers.{m.group(1)}."
        if m.group(2) == "attn.in_proj":
            for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{prefix}self_attn.{part}_proj.{m.group(3)}"] = chunk.copy()
        else:
            out[f"{prefix}{layer[m.group(2)]}.{m.group(3)}"] = value
    return out


__all__: List[str] = ["SigLIPConverter", "config_from_hf", "config_to_hf"]
