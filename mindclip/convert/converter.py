"""The CLIP family's converter: PyTorch CLIP checkpoints (OpenAI, open_clip, Hugging Face,
MindFormers 1.x) <-> mindclip weight files; and writing converted files for any family."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..families.base import get_family
from ..models.config import CLIPConfig
from ..factory import (PREPROCESS_KEY, check_state_dict, get_model_config,
                              read_architecture, write_pretrained)
from ..models.weights_io import FAMILY_KEY, read_weights, write_safetensors
from .hf import hf_config_to_clip, hf_state_to_openclip
from .infer import infer_config, matching_model_names
from .openclip_family import expected_shapes, openclip_preprocess_cfg, write_openclip_config
from .naming import (align_names, detect_naming, flat_text_layout, is_custom_text_layout,
                     mindclip_to_openclip, mindformers_to_mindclip, openclip_to_mindclip,
                     strip_prefix)
from .sources import (SourceCheckpoint, openclip_model_cfg_to_clip,
                      read_source)

SOURCES = ("auto", "openai", "open_clip", "hf", "mindformers", "mindclip", "declip")


def _source_config(source: SourceCheckpoint) -> Optional[CLIPConfig]:
    """The CLIP architecture a source's own files describe, if any."""
    if source.kind == "open_clip_dir":
        return openclip_model_cfg_to_clip(source.raw_config)
    if source.kind == "hf_dir":
        return hf_config_to_clip(source.raw_config)
    if source.raw_config:
        arch = read_architecture(source.raw_config)
        if arch is not None:
            return arch[1]
    return None


def _to_openclip_names(tensors: Dict[str, np.ndarray], naming: str) -> Dict[str, np.ndarray]:
    if naming == "hf":
        return hf_state_to_openclip(tensors)
    if naming == "mindformers":
        return mindclip_to_openclip(mindformers_to_mindclip(tensors))
    if naming == "mindclip":
        return mindclip_to_openclip(tensors)
    return tensors


def convert_checkpoint(path: str, src: str = "auto", model_name: Optional[str] = None,
                       quick_gelu: Optional[bool] = None,
                       allow_torchscript: bool = False) -> Tuple[Dict[str, np.ndarray], CLIPConfig]:
    """Read any supported checkpoint and return ``(mindclip tensors, architecture)``.

    The architecture comes from ``model_name`` if given, else from the source's own config
    (open_clip folder, HF folder, mindclip metadata), else from the tensor shapes; the
    activation, which shapes cannot tell, is QuickGELU for OpenAI and MindFormers sources
    and must otherwise be given (``quick_gelu`` or ``model_name``). The result is checked
    against a model of that architecture: every weight present, none extra, all shapes equal.
    """
    if src not in SOURCES:
        raise ValueError(f"src must be one of {SOURCES}, got {src!r}")
    source = read_source(path, allow_torchscript=allow_torchscript)
    return convert_source(source, src, model_name, quick_gelu)


def convert_source(source: SourceCheckpoint, src: str = "auto", model_name: Optional[str] = None,
                   quick_gelu: Optional[bool] = None) -> Tuple[Dict[str, np.ndarray], CLIPConfig]:
    """:func:`convert_checkpoint` on a source already read."""
    path = source.path
    tensors = strip_prefix(source.tensors)
    naming = detect_naming(tensors)
    expected_naming = {"openai": "open_clip", "open_clip": "open_clip", "hf": "hf",
                       "mindformers": "mindformers", "mindclip": "mindclip"}.get(src)
    if expected_naming and naming != expected_naming:
        raise ValueError(f"--src {src} but {path} uses {naming} parameter names")
    state = _to_openclip_names(tensors, naming)
    custom_text = is_custom_text_layout(state)
    state = flat_text_layout(state)

    if model_name is not None:
        config = get_model_config(model_name)
    elif _source_config(source) is not None:
        config = _source_config(source)
    else:
        openai_like = source.kind == "torchscript" or src == "openai" or naming == "mindformers"
        gelu = True if openai_like and quick_gelu is None else quick_gelu
        if gelu is None:
            shaped = infer_config(state, quick_gelu=False)
            names = matching_model_names(shaped, ignore_activation=True)
            raise ValueError(
                f"{path} does not say whether it uses QuickGELU (OpenAI-trained weights) or exact "
                "GELU, and the shapes cannot tell. Pass --model NAME"
                + (f" (shape-compatible: {', '.join(names)})" if names else "")
                + " or --quick_gelu true|false.")
        config = infer_config(state, quick_gelu=gelu)
        config.custom_text = custom_text
    if quick_gelu is not None and quick_gelu != config.quick_gelu:
        raise ValueError(f"quick_gelu={quick_gelu} contradicts the architecture "
                         f"(quick_gelu={config.quick_gelu})")
    expected = expected_shapes(get_family("clip"), config)
    out = align_names(openclip_to_mindclip(state), expected)
    check_state_dict(expected, out, path)
    return out, config


def save_converted(tensors: Dict[str, np.ndarray], config: Any, out_path: str,
                   dtype: str = "fp32", source: str = "", family: str = "clip",
                   assets: Optional[str] = None,
                   preprocess: Optional[Dict[str, Any]] = None) -> str:
    """Write a mindclip checkpoint recording its family and architecture; returns the file.

    ``out_path`` ending in ``.ckpt``/``.safetensors`` is a file; anything else is a folder
    that receives ``mindclip_model.safetensors``, ``config.json`` and, when ``assets`` names
    a tokenizer folder, the tokenizer files (such a model must be written to a folder).
    """
    from ..tokenizer.hf import HFTokenizer

    metadata = {"source": source}
    if preprocess:  # mean, std, interpolation, resize_mode (a pretrained tag's)
        metadata[PREPROCESS_KEY] = json.dumps(preprocess, sort_keys=True)
    return write_pretrained(out_path, tensors, get_family(family), config, dtype=dtype,
                            metadata=metadata,
                            tokenizer=HFTokenizer(assets) if assets else None)


def export_to_openclip(ms_path: str, out_path: str, model_name: Optional[str] = None) -> str:
    """mindclip checkpoint -> open_clip state dict in safetensors (fp32).

    ``out_path`` ending in ``.safetensors`` is a single file; otherwise a folder in open_clip's
    ``local-dir`` layout (``open_clip_config.json`` + ``open_clip_model.safetensors``).
    """
    from ..factory import find_weight_file, read_checkpoint_config

    weight_file = find_weight_file(ms_path)
    tensors, metadata = read_weights(weight_file)
    arch = read_checkpoint_config(weight_file)
    if arch is not None and arch[0].name != "clip":
        raise ValueError(f"{ms_path} holds a {arch[0].name!r} model; --reverse writes CLIP models "
                         "in open_clip's layout")
    config = get_model_config(model_name) if model_name else (arch[1] if arch else None)
    if config is None:
        raise ValueError(f"{ms_path} records no architecture; pass --model")
    naming = detect_naming(tensors)
    if naming == "mindformers":
        tensors = mindformers_to_mindclip(tensors)
    elif naming != "mindclip":
        raise ValueError(f"{ms_path} is not a MindSpore CLIP checkpoint ({naming} names)")
    check_state_dict(expected_shapes(get_family("clip"), config), tensors, ms_path)
    state = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
             for k, v in mindclip_to_openclip(tensors, config.custom_text,
                                              hf_text=bool(config.text_cfg.hf_model_name)).items()}
    if out_path.endswith(".safetensors"):
        write_safetensors(out_path, state)
        return out_path
    write_openclip_config(out_path, config,
                          openclip_preprocess_cfg(get_family("clip"), config, metadata))
    weight_path = os.path.join(out_path, "open_clip_model.safetensors")
    write_safetensors(weight_path, state)
    return weight_path


class ClipConverter:
    """The CLIP family's converter, as the registry and ``tools/convert_weight.py`` use it."""

    @staticmethod
    def reverse(ms_path: str, out_path: str, model_name: Optional[str] = None) -> str:
        """A mindclip CLIP checkpoint -> an open_clip state dict (file or local-dir folder)."""
        return export_to_openclip(ms_path, out_path, model_name)

    family = "clip"
    sources = ("openai", "open_clip", "hf", "mindformers", "mindclip")

    @staticmethod
    def detect(source: SourceCheckpoint) -> bool:
        """Whether ``source`` is a CLIP checkpoint in a layout this converter reads."""
        if source.kind == "hf_dir" and source.raw_config.get("model_type", "clip") != "clip":
            return False
        if source.raw_config and source.raw_config.get(FAMILY_KEY, "clip") != "clip":
            return False
        try:
            detect_naming(strip_prefix(source.tensors))
        except ValueError:
            return False
        return True

    @staticmethod
    def convert(source: SourceCheckpoint, src: str = "auto", model_name: Optional[str] = None,
                quick_gelu: Optional[bool] = None, **_: Any) -> Tuple[Dict[str, np.ndarray], CLIPConfig]:
        return convert_source(source, src, model_name, quick_gelu)

    @staticmethod
    def adapt(tensors: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
        """MindFormers 1.x CLIP checkpoints load directly: same names with the text tower at
        the top level. None for anything else."""
        if "token_embedding.embedding_table" in tensors:
            return mindformers_to_mindclip(tensors)
        return None
