"""The one open_clip-layout converter, for every family open_clip builds (CLIP, SigLIP, CoCa):
state dicts and Hub / ``local-dir`` folders in, open_clip state dicts and folders out, driven
by the model's own parameter names (mindclip's differ from open_clip's only by MindSpore's
norm suffixes), so a new tower needs no converter code. A family's converter subclasses
:class:`OpenClipFamilyConverter` with its name, config class and the keys that mark its
state dicts; CLIP's adds the other layouts it reads (OpenAI, Hugging Face, MindFormers)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..families.base import get_family
from ..factory import (PREPROCESS_KEY, check_state_dict, find_weight_file, get_model_config,
                       read_architecture, read_checkpoint_config)
from ..normalization import PreprocessCfg
from ..models.rng import weight_parameters
from ..models.weights_io import FAMILY_KEY, read_weights, write_safetensors
from ..tokenizer.hf import HFTokenizer, is_tokenizer_folder
from .naming import align_names, mindclip_to_openclip, openclip_to_mindclip, strip_prefix
from .sources import OPENCLIP_DIR_CONFIG, SourceCheckpoint

SCALARS = ("logit_scale", "logit_bias")


def expected_shapes(family: Any, config: Any) -> Dict[str, tuple]:
    """Parameter shapes of a model of ``family`` (a Family or its name) with architecture
    ``config``, from a model built without initialising its parameters (no memory for the
    weights: a conversion holds one tensor at a time, not a model beside the checkpoint)."""
    family = get_family(family) if isinstance(family, str) else family
    model = family.build_model(config, initialize=False)
    return {k: tuple(p.shape) for k, p in weight_parameters(model).items()}


def openclip_to_ms(state: Dict[str, np.ndarray], expected) -> Dict[str, np.ndarray]:
    """open_clip names -> mindclip's (towers renamed as CLIP's, norm suffixes aligned)."""
    state = {k: (v.reshape(()) if k in SCALARS else v) for k, v in state.items()}
    return align_names(openclip_to_mindclip(state), expected)


def ms_to_openclip(tensors: Dict[str, np.ndarray], config: Any,
                   custom_text: bool = True) -> Dict[str, np.ndarray]:
    """mindclip names -> open_clip's (with ``custom_text`` the ``CustomTextCLIP``/``CoCa``
    layout: the text tower under ``text.``), timm trunks' norms with PyTorch's suffixes,
    floats as fp32."""
    state = mindclip_to_openclip(tensors, custom_text=custom_text,
                                 hf_text=bool(config.text_cfg.hf_model_name))
    return {name: np.asarray(value, np.float32) if np.issubdtype(value.dtype, np.floating) else value
            for name, value in state.items()}


class OpenClipFamilyConverter:
    """Reads and writes one family's checkpoints in open_clip's layout."""

    family = ""
    config_class: type = object
    marker_keys: Tuple[str, ...] = ()  # a state dict holding any of these is this family's
    example = ""                        # an architecture name for error messages
    sources = ("open_clip", "mindclip")

    @classmethod
    def detect(cls, source: SourceCheckpoint) -> bool:
        cfg = source.raw_config or {}
        if source.kind == "open_clip_dir":
            return cls.config_class.claims(cfg)
        if cfg.get(FAMILY_KEY):
            return cfg[FAMILY_KEY] == cls.family
        return any(k.startswith(cls.marker_keys) or k.startswith(tuple("module." + m for m in cls.marker_keys))
                   for k in source.tensors)

    @staticmethod
    def custom_text(config: Any) -> bool:
        """Whether open_clip lays this architecture's text tower out under ``text.``."""
        del config
        return True

    @classmethod
    def openclip_source(cls, source: SourceCheckpoint, model_name: Optional[str],
                        src: str = "auto", quick_gelu: Optional[bool] = None) -> Tuple[Dict, Any]:
        """``(open_clip state dict, architecture)`` of an open_clip-layout source."""
        del src, quick_gelu
        if model_name:
            config = get_model_config(model_name)
        elif source.kind == "open_clip_dir":
            config = cls.config_class.from_dict(source.raw_config)
        elif read_architecture(source.raw_config or {}) is not None:
            config = read_architecture(source.raw_config)[1]
        else:
            raise ValueError(f"{source.path}: an open_clip {cls.family} state dict does not say which "
                             f"architecture it is; pass --model (e.g. {cls.example})")
        return strip_prefix(source.tensors), config

    @classmethod
    def finish(cls, state: Dict[str, np.ndarray], config: Any, path: str) -> Tuple[Dict, Any]:
        if not isinstance(config, cls.config_class):
            raise ValueError(f"--model names a {type(config).__name__}, not a {cls.family} architecture")
        expected = expected_shapes(cls.family, config)
        out = openclip_to_ms(state, expected)
        check_state_dict(expected, out, path)
        return out, config

    @classmethod
    def convert(cls, source: SourceCheckpoint, src: str = "auto", model_name: Optional[str] = None,
                quick_gelu: Optional[bool] = None, **_: Any) -> Tuple[Dict[str, np.ndarray], Any]:
        """A source checkpoint -> ``(mindclip tensors, architecture)``, checked against a model
        of that architecture: every weight present, none extra, all shapes equal."""
        return cls.finish(*cls.openclip_source(source, model_name, src, quick_gelu), source.path)

    @staticmethod
    def assets(source: SourceCheckpoint) -> Optional[str]:
        """The tokenizer files that travel with the converted weights."""
        return source.path if source.path and is_tokenizer_folder(source.path) else None

    @staticmethod
    def adapt(tensors: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
        del tensors
        return None

    @staticmethod
    def ms_names(tensors: Dict[str, np.ndarray], path: str) -> Dict[str, np.ndarray]:
        """A MindSpore checkpoint's tensors under mindclip's names."""
        del path
        return tensors

    @classmethod
    def read_ms(cls, ms_path: str, model_name: Optional[str]) -> Tuple[Dict, Any, str, Dict]:
        """``(open_clip state dict, architecture, source folder, open_clip preprocess_cfg)``
        of a mindclip checkpoint."""
        weight_file = find_weight_file(ms_path)
        arch = read_checkpoint_config(weight_file)
        if arch is not None and not model_name and arch[0].name != cls.family:
            raise ValueError(f"{ms_path} holds a {arch[0].name!r} model, not a {cls.family} one")
        config = get_model_config(model_name) if model_name else (arch[1] if arch else None)
        if config is None:
            raise ValueError(f"{ms_path} records no architecture; pass --model")
        if not isinstance(config, cls.config_class):
            raise ValueError(f"{ms_path} is not a mindclip {cls.family} checkpoint")
        tensors, metadata = read_weights(weight_file)
        tensors = cls.ms_names(tensors, ms_path)
        check_state_dict(expected_shapes(cls.family, config), tensors, weight_file)
        return (ms_to_openclip(tensors, config, cls.custom_text(config)), config,
                os.path.dirname(os.path.abspath(weight_file)),
                openclip_preprocess_cfg(get_family(cls.family), config, metadata))

    @staticmethod
    def write_openclip(state: Dict[str, np.ndarray], config: Any, out_path: str, source_dir: str,
                       preprocess: Dict[str, Any]) -> str:
        """``out_path`` ending in ``.safetensors``: the bare state dict. Otherwise an open_clip
        folder: ``open_clip_config.json`` + ``open_clip_model.safetensors`` (what
        ``open_clip.create_model("local-dir:...")`` loads), tokenizer files beside. Returns
        what was written (the file or the folder)."""
        if out_path.endswith(".safetensors"):
            write_safetensors(out_path, state)
            return out_path
        write_openclip_config(out_path, config, preprocess)
        write_safetensors(os.path.join(out_path, "open_clip_model.safetensors"), state)
        copy_tokenizer(source_dir, out_path)
        return out_path

    @classmethod
    def reverse(cls, ms_path: str, out_path: str, model_name: Optional[str] = None) -> str:
        """A mindclip checkpoint of this family -> an open_clip state dict (``.safetensors``)
        or ``local-dir`` folder."""
        state, config, source_dir, preprocess = cls.read_ms(ms_path, model_name)
        return cls.write_openclip(state, config, out_path, source_dir, preprocess)


def openclip_preprocess_cfg(family: Any, config: Any, metadata: Dict[str, str]) -> Dict[str, Any]:
    """open_clip's ``preprocess_cfg`` of a mindclip checkpoint: the record its weights carry
    (a tag's, an open_clip folder's), else the family's statistics with the default resize."""
    record = json.loads(metadata[PREPROCESS_KEY]) if PREPROCESS_KEY in metadata else {}
    model_class = family.model_class
    cfg = PreprocessCfg.from_dict(record, model_class.image_mean, model_class.image_std).to_dict()
    return {"size": config.vision_cfg.image_size, "mode": "RGB", **cfg}


def write_openclip_config(out_path: str, config: Any, preprocess: Dict[str, Any]) -> None:
    """``open_clip_config.json``: the architecture and its preprocessing record."""
    os.makedirs(out_path, exist_ok=True)
    model_cfg = config.to_dict()
    # mindclip's record of a Hugging Face tower's config.json: open_clip reads it from
    # hf_model_name instead
    model_cfg["text_cfg"].pop("hf_model_config", None)
    with open(os.path.join(out_path, OPENCLIP_DIR_CONFIG), "w", encoding="utf-8") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, f, indent=2)


def copy_tokenizer(source_dir: str, out_path: str) -> None:
    if is_tokenizer_folder(source_dir):
        HFTokenizer(source_dir).save(out_path)
