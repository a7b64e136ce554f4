"""The dual-encoder family's converter: Hugging Face ``VisionTextDualEncoderModel`` folders
<-> mindclip folders, and run_clip.py's starting point (``from_vision_text_pretrained``):
a HF CLIP folder's vision tower + a HF BERT/RoBERTa folder's text model, new projections.

The image tower goes through the CLIP naming (HF -> open_clip -> mindclip), the text tower
keeps Hugging Face's module names with MindSpore's parameter suffixes.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..models.bert import ROBERTA_TYPES, BertConfig
from ..models.dual_encoder import DualEncoderConfig
from ..factory import check_state_dict, find_weight_file, read_checkpoint_config
from ..models.weights_io import read_weights, write_safetensors
from ..tokenizer.hf import HFTokenizer, is_tokenizer_folder
from .hf import hf_state_to_openclip, hf_vision_cfg, hf_vision_config_dict, openclip_vision_to_hf
from .naming import mindclip_to_openclip, openclip_to_mindclip
from .openclip_family import expected_shapes
from .sources import SourceCheckpoint, read_source

MODEL_TYPE = "vision-text-dual-encoder"
TEXT_TYPES = ("bert",) + ROBERTA_TYPES
_EMBEDDINGS = re.compile(r"^(embeddings\.(word|position|token_type)_embeddings)\.weight$")
_NORM = re.compile(r"^(.*LayerNorm)\.(weight|bias)$")
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _text_to_mindclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF BERT/RoBERTa names (no model prefix) -> ``text.*`` parameters of our BertModel."""
    out = {}
    for name, value in state.items():
        if name in _BUFFERS:
            continue
        name = _EMBEDDINGS.sub(r"\1.embedding_table", name)
        name = _NORM.sub(lambda m: f"{m.group(1)}.{'gamma' if m.group(2) == 'weight' else 'beta'}", name)
        out["text." + name] = value
    return out


def _text_to_hf(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = {}
    for name, value in state.items():
        name = name[len("text."):]
        name = re.sub(r"\.embedding_table$", ".weight", name)
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        out["text_model." + name] = value
    return out


def _vision_to_mindclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF ``vision_model.*`` (+ ``visual_projection.weight``) -> our ``visual.*``."""
    return openclip_to_mindclip(hf_state_to_openclip(state))


def text_config_from_hf(text: Dict[str, Any]) -> BertConfig:
    if text.get("model_type") not in TEXT_TYPES:
        raise ValueError(f"text model type {text.get('model_type')!r} is not implemented; "
                         f"valid: {list(TEXT_TYPES)}")
    return BertConfig.from_hf(text)


def config_from_hf(config: Dict[str, Any], max_seq_length: int = 128) -> DualEncoderConfig:
    """A HF ``VisionTextDualEncoderConfig`` dict -> :class:`DualEncoderConfig`."""
    vision = config.get("vision_config") or {}
    if vision.get("model_type", "clip_vision_model") not in ("clip_vision_model", "clip"):
        raise ValueError(f"vision model type {vision.get('model_type')!r}: only CLIP vision "
                         "towers are implemented")
    act = vision.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise ValueError(f"vision hidden_act {act!r}: need quick_gelu or gelu")
    text = text_config_from_hf(config.get("text_config") or {})
    return DualEncoderConfig.from_dict({
        "projection_dim": config.get("projection_dim", 512),
        "logit_scale_init_value": config.get("logit_scale_init_value", 2.6592),
        "vision_cfg": hf_vision_cfg(vision), "vision_quick_gelu": act == "quick_gelu",
        "text_cfg": text.to_dict(),
        "max_seq_length": min(max_seq_length, text.max_position_embeddings - (
            text.pad_token_id + 1 if text.is_roberta else 0))})


def config_to_hf(config: DualEncoderConfig) -> Dict[str, Any]:
    """:class:`DualEncoderConfig` -> the ``config.json`` transformers reads."""
    text = {k: v for k, v in config.text_cfg.to_dict().items()}
    return {"model_type": MODEL_TYPE, "architectures": ["VisionTextDualEncoderModel"],
            "projection_dim": config.projection_dim,
            "logit_scale_init_value": config.logit_scale_init_value,
            "vision_config": hf_vision_config_dict(config.vision_cfg, config.vision_quick_gelu,
                                                   config.projection_dim),
            "text_config": text}


def _split_dual_state(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    vision, text, out, unknown = {}, {}, {}, []
    for name, value in state.items():
        if name.startswith("vision_model."):
            sub = name[len("vision_model."):]
            if sub.startswith("vision_model."):  # CLIPVisionModel nested one level deeper
                sub = sub[len("vision_model."):]
            vision["vision_model." + sub] = value
        elif name == "visual_projection.weight":
            vision[name] = value
        elif name.startswith("text_model."):
            text[name[len("text_model."):]] = value
        elif name in ("text_projection.weight", "logit_scale"):
            out[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"weights a dual encoder does not have: {unknown[:10]}")
    out.update(_vision_to_mindclip(vision))
    out.update(_text_to_mindclip(text))
    return out


class DualEncoderConverter:
    """Reads HF ``VisionTextDualEncoderModel`` folders; writes them back (``reverse``);
    assembles a new dual encoder from a CLIP and a BERT/RoBERTa folder (``assemble``)."""

    family = "dual_encoder"
    sources = ("hf",)

    @staticmethod
    def detect(source: SourceCheckpoint) -> bool:
        return source.kind == "hf_dir" and source.raw_config.get("model_type") == MODEL_TYPE

    @staticmethod
    def convert(source: SourceCheckpoint, model_name: Optional[str] = None, **_: Any
                ) -> Tuple[Dict[str, np.ndarray], DualEncoderConfig]:
        del model_name  # the folder's config.json is the architecture
        config = config_from_hf(source.raw_config)
        tensors = _split_dual_state(source.tensors)
        check_state_dict(expected_shapes("dual_encoder", config), tensors, source.path)
        return tensors, config

    @staticmethod
    def assets(source: SourceCheckpoint) -> Optional[str]:
        """The tokenizer folder that travels with the converted weights."""
        return source.path if is_tokenizer_folder(source.path) else None

    @staticmethod
    def adapt(tensors: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
        del tensors
        return None

    @staticmethod
    def reverse(ms_path: str, out_dir: str, model_name: Optional[str] = None) -> str:
        """A mindclip dual-encoder folder -> a folder ``VisionTextDualEncoderModel
        .from_pretrained`` loads (config.json, model.safetensors, the tokenizer files)."""
        del model_name  # the file records its architecture
        weight_file = find_weight_file(ms_path)
        arch = read_checkpoint_config(weight_file)
        if arch is None or arch[0].name != "dual_encoder":
            raise ValueError(f"{ms_path} is not a mindclip dual-encoder checkpoint")
        config = arch[1]
        tensors, _ = read_weights(weight_file)
        check_state_dict(expected_shapes("dual_encoder", config), tensors, weight_file)
        vision = {k: v for k, v in tensors.items() if k.startswith("visual.")}
        text = {k: v for k, v in tensors.items() if k.startswith("text.")}
        state = {**openclip_vision_to_hf(mindclip_to_openclip(vision)), **_text_to_hf(text),
                 "text_projection.weight": tensors["text_projection.weight"],
                 "logit_scale": tensors["logit_scale"]}
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(config), f, indent=2)
        write_safetensors(os.path.join(out_dir, "model.safetensors"),
                          {k: np.asarray(v, np.float32) for k, v in state.items()},
                          metadata={"format": "pt"})
        source_dir = os.path.dirname(os.path.abspath(weight_file))
        if is_tokenizer_folder(source_dir):
            HFTokenizer(source_dir).save(out_dir)
        return out_dir

    @staticmethod
    def assemble(vision_path: str, text_path: str, projection_dim: int = 512,
                 seed: int = 0) -> Tuple[Dict[str, np.ndarray], DualEncoderConfig]:
        """``from_vision_text_pretrained``: the vision tower of a HF CLIP folder (without its
        projection), the text model of a HF BERT/RoBERTa folder, and new projections drawn
        as HF initialises them (normal, std = the text config's initializer_range);
        ``logit_scale`` = 2.6592."""
        vsrc, tsrc = read_source(vision_path), read_source(text_path)
        if vsrc.kind != "hf_dir" or tsrc.kind != "hf_dir":
            raise ValueError("--vision_path and --text_path must be Hugging Face model folders")
        vcfg = vsrc.raw_config.get("vision_config", vsrc.raw_config) \
            if vsrc.raw_config.get("model_type") == "clip" else vsrc.raw_config
        vision = {}
        for name, value in vsrc.tensors.items():
            sub = name[len("vision_model."):] if name.startswith("vision_model.") else None
            if sub is not None:
                vision["vision_model." + (sub[len("vision_model."):] if sub.startswith("vision_model.") else sub)] = value
        text = {}
        for name, value in tsrc.tensors.items():
            for prefix in ("bert.", "roberta.", "model."):
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            if name.startswith(("embeddings.", "encoder.", "pooler.")):
                text[name] = value
        config = config_from_hf({"projection_dim": projection_dim, "vision_config": vcfg,
                                 "text_config": tsrc.raw_config})
        rng = np.random.default_rng(seed)
        std = float(tsrc.raw_config.get("initializer_range", 0.02))
        tensors = _vision_to_mindclip(vision)
        tensors.pop("visual.proj", None)  # CLIP's own projection is not used (HF's code)
        tensors["visual.proj"] = (rng.standard_normal((config.vision_cfg.width, projection_dim)) * std
                                  ).astype(np.float32)
        tensors.update(_text_to_mindclip(text))
        hidden = config.text_cfg.hidden_size
        if "text.pooler.dense.weight" not in tensors:  # masked-LM checkpoints carry no pooler
            tensors["text.pooler.dense.weight"] = (rng.standard_normal((hidden, hidden)) * std).astype(np.float32)
            tensors["text.pooler.dense.bias"] = np.zeros(hidden, np.float32)
        tensors["text_projection.weight"] = (rng.standard_normal((projection_dim, hidden)) * std
                                             ).astype(np.float32)
        tensors["logit_scale"] = np.array(config.logit_scale_init_value, np.float32)
        check_state_dict(expected_shapes("dual_encoder", config), tensors, f"{vision_path} + {text_path}")
        return tensors, config
