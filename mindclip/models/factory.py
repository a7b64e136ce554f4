"""Model registry (architecture JSON files + aliases), ``create_model`` and weight loading."""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Union

import numpy as np

from ..registry import register
from .clip import CLIPModel
from .config import CLIPConfig
from .weights_io import METADATA_KEY, read_weights

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "model_configs")

# MindFormers' and OpenAI's names for the same architectures. Both mean OpenAI-trained
# weights, hence the QuickGELU variants.
MODEL_ALIASES: Dict[str, str] = {
    "clip_vit_b_32": "ViT-B-32-quickgelu",
    "clip_vit_b_16": "ViT-B-16-quickgelu",
    "clip_vit_l_14": "ViT-L-14-quickgelu",
    "clip_vit_l_14@336": "ViT-L-14-336-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

# File names looked for when ``pretrained`` is a directory, most preferred first.
WEIGHT_FILES = ("mindclip_model.safetensors", "mindclip_model.ckpt")
CONVERT_HINT = ("mindclip never downloads weights. Convert a PyTorch checkpoint first, e.g.\n"
                "  python tools/convert_weight.py --torch_path ViT-B-32.pt "
                "--mindspore_path clip_vit_b_32.safetensors\n"
                "and pass the written file (or its directory) as `pretrained`.")


def _config_files() -> Dict[str, str]:
    return {os.path.splitext(os.path.basename(p))[0]: p
            for p in glob.glob(os.path.join(CONFIG_DIR, "*.json"))}


def list_models(include_aliases: bool = False) -> List[str]:
    """Names of the built-in architectures (``ViT-B-32``, ``RN50-quickgelu``, ...)."""
    names = sorted(_config_files())
    return names + sorted(MODEL_ALIASES) if include_aliases else names


def resolve_model_name(name: str) -> str:
    """Canonical architecture name for ``name`` or an alias of it."""
    name = MODEL_ALIASES.get(name, name)
    if name not in _config_files():
        raise ValueError(f"unknown model {name!r}; available: {list_models(include_aliases=True)}")
    return name


def get_model_config(name: str) -> CLIPConfig:
    """The :class:`CLIPConfig` of a built-in architecture or alias."""
    return CLIPConfig.from_json(_config_files()[resolve_model_name(name)])


def find_weight_file(pretrained: str) -> str:
    """Resolve ``pretrained`` (a file or a directory holding one) to a weight file path."""
    if os.path.isdir(pretrained):
        for fname in WEIGHT_FILES:
            if os.path.isfile(os.path.join(pretrained, fname)):
                return os.path.join(pretrained, fname)
        found = sorted(glob.glob(os.path.join(pretrained, "*.safetensors"))
                       + glob.glob(os.path.join(pretrained, "*.ckpt")))
        if len(found) == 1:
            return found[0]
        what = "several weight files: " + ", ".join(found) if found else "no .ckpt or .safetensors file"
        raise FileNotFoundError(f"pretrained directory {pretrained} holds {what}. {CONVERT_HINT}")
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"pretrained weights not found: {pretrained}. {CONVERT_HINT}")
    return pretrained


def read_checkpoint_config(path: str) -> Optional[CLIPConfig]:
    """The architecture recorded in a converted checkpoint, or None if it has none."""
    _, metadata = read_weights(find_weight_file(path))
    return CLIPConfig.from_dict(json.loads(metadata[METADATA_KEY])) if METADATA_KEY in metadata else None


def check_state_dict(expected: Dict[str, tuple], tensors: Dict[str, np.ndarray], source: str) -> None:
    """Raise with every missing, unexpected and mis-shaped weight named."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k])}"
                 for k in sorted(set(expected) & set(tensors))
                 if tuple(tensors[k].shape) != tuple(expected[k])]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {source} does not fit the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        if misshaped:
            lines.append(f"  wrong shape ({len(misshaped)}): " + "; ".join(misshaped))
        raise ValueError("\n".join(lines))


def load_pretrained(model: CLIPModel, pretrained: str) -> CLIPModel:
    """Load a converted checkpoint into ``model``, refusing anything that does not fit exactly.

    The architecture recorded in the file (if any) must equal the model's, so that e.g.
    QuickGELU weights are never run with exact GELU.
    """
    import mindspore as ms

    path = find_weight_file(pretrained)
    tensors, metadata = read_weights(path)
    if METADATA_KEY in metadata:
        saved = CLIPConfig.from_dict(json.loads(metadata[METADATA_KEY]))
        diff = saved.differences(model.config)
        if diff:
            raise ValueError(f"checkpoint {path} was converted for a different architecture "
                             f"(checkpoint vs model): " + "; ".join(diff))
    if "token_embedding.embedding_table" in tensors:
        # A MindFormers 1.x CLIP checkpoint: same names with the text tower at the top level.
        from ..convert.naming import mindformers_to_mindclip

        tensors = mindformers_to_mindclip(tensors)
    params = model.parameters_dict()
    check_state_dict({k: p.shape for k, p in params.items()}, tensors, path)
    for name, param in params.items():
        param.set_data(ms.Tensor(tensors[name].astype(np.float32)).astype(param.dtype))
    return model


@register("model", "clip")
def create_model(model_name: Optional[str] = None, pretrained: Optional[str] = None,
                 config: Union[CLIPConfig, dict, None] = None) -> CLIPModel:
    """Build a CLIP model by architecture name, optionally loading converted weights.

    Args:
        model_name: a name from :func:`list_models` or an alias (``clip_vit_b_32``). May be
            omitted when ``pretrained`` records its architecture (every converted file does).
        pretrained: a ``.ckpt``/``.safetensors`` file or a directory holding one.
        config: an explicit architecture instead of a name.

    The model is returned in inference mode (``set_train(False)``).
    """
    if config is not None:
        cfg = config if isinstance(config, CLIPConfig) else CLIPConfig.from_dict(config)
    elif model_name is not None:
        cfg = get_model_config(model_name)
    elif pretrained is not None:
        cfg = read_checkpoint_config(pretrained)
        if cfg is None:
            raise ValueError(f"{pretrained} records no architecture; pass model_name")
    else:
        raise ValueError("create_model needs a model_name, a config or a pretrained checkpoint")
    model = CLIPModel(cfg)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    model.set_train(False)
    return model
