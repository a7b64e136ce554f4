"""The CLIP family's converter: the open_clip-layout converter plus the other layouts CLIP
checkpoints come in (OpenAI, Hugging Face, MindFormers 1.x), whose names are brought to
open_clip's first; and writing converted files for any family."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..families.base import get_family
from ..models.config import CLIPConfig
from ..factory import PREPROCESS_KEY, get_model_config, read_architecture, write_pretrained
from ..models.weights_io import FAMILY_KEY
from .hf import hf_config_to_clip, hf_state_to_openclip
from .infer import infer_config, matching_model_names
from .openclip_family import OpenClipFamilyConverter
from .naming import (detect_naming, flat_text_layout, is_custom_text_layout, mindclip_to_openclip,
                     mindformers_to_mindclip, strip_prefix)
from .sources import SourceCheckpoint, openclip_model_cfg_to_clip, read_source

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


class ClipConverter(OpenClipFamilyConverter):
    """The CLIP family's converter, as the registry and ``tools/convert_weight.py`` use it."""

    family = "clip"
    config_class = CLIPConfig
    example = "ViT-B-32"
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
    def custom_text(config: Any) -> bool:
        return config.custom_text

    @classmethod
    def openclip_source(cls, source: SourceCheckpoint, model_name: Optional[str],
                        src: str = "auto", quick_gelu: Optional[bool] = None) -> Tuple[Dict, CLIPConfig]:
        """Any CLIP layout, renamed to open_clip's. The architecture comes from ``model_name``
        if given, else from the source's own config (open_clip folder, HF folder, mindclip
        metadata), else from the tensor shapes; the activation, which shapes cannot tell, is
        QuickGELU for OpenAI and MindFormers sources and must otherwise be given
        (``quick_gelu`` or ``model_name``)."""
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
        return state, config

    @staticmethod
    def assets(source: SourceCheckpoint) -> Optional[str]:
        # CLIP's tokenizer is built in, or named by the text tower's hf_tokenizer_name and
        # fetched by that name; a Hugging Face CLIP folder's BPE files are not carried
        del source
        return None

    @staticmethod
    def ms_names(tensors: Dict[str, np.ndarray], path: str) -> Dict[str, np.ndarray]:
        naming = detect_naming(tensors)
        if naming == "mindformers":
            return mindformers_to_mindclip(tensors)
        if naming != "mindclip":
            raise ValueError(f"{path} is not a MindSpore CLIP checkpoint ({naming} names)")
        return tensors

    @staticmethod
    def adapt(tensors: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
        """MindFormers 1.x CLIP checkpoints load directly: same names with the text tower at
        the top level. None for anything else."""
        if "token_embedding.embedding_table" in tensors:
            return mindformers_to_mindclip(tensors)
        return None


def convert_checkpoint(path: str, src: str = "auto", model_name: Optional[str] = None,
                       quick_gelu: Optional[bool] = None,
                       allow_torchscript: bool = False) -> Tuple[Dict[str, np.ndarray], CLIPConfig]:
    """Read any supported CLIP checkpoint and return ``(mindclip tensors, architecture)``
    (see :meth:`ClipConverter.openclip_source` for where the architecture comes from),
    checked against a model of that architecture."""
    if src not in SOURCES:
        raise ValueError(f"src must be one of {SOURCES}, got {src!r}")
    source = read_source(path, allow_torchscript=allow_torchscript)
    return ClipConverter.convert(source, src, model_name, quick_gelu)


def export_to_openclip(ms_path: str, out_path: str, model_name: Optional[str] = None) -> str:
    """mindclip CLIP checkpoint -> open_clip state dict in safetensors (fp32): ``out_path``
    ending in ``.safetensors`` is a single file; otherwise a folder in open_clip's
    ``local-dir`` layout (``open_clip_config.json`` + ``open_clip_model.safetensors``)."""
    return ClipConverter.reverse(ms_path, out_path, model_name)


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
