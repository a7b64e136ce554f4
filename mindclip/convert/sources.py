"""Readers for every checkpoint layout we convert from.

Each returns the raw tensors as numpy arrays plus whatever architecture description the
source carries, unparsed: which family's converter reads it, and how, is the converter's call. PyTorch pickles are read with ``torch.load(weights_only=True)``;
TorchScript archives (OpenAI's ``ViT-B-32.pt``) can run code when loaded and are only
opened when the caller allows it explicitly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from ..models.config import CLIPConfig
from ..normalization import PreprocessCfg
from ..models.weights_io import read_ckpt, read_safetensors

OPENCLIP_DIR_CONFIG = "open_clip_config.json"
OPENCLIP_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_DIR_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class SourceCheckpoint:
    """Raw tensors of a checkpoint and what its files say about it."""

    tensors: Dict[str, np.ndarray]
    kind: str  # torchscript | pickle | safetensors | ckpt | open_clip_dir | hf_dir
    # open_clip_dir: its model_cfg; hf_dir: its config.json; safetensors/ckpt: the metadata
    raw_config: Optional[Dict[str, Any]] = None
    path: str = ""
    # open_clip_dir: its preprocess_cfg (mean, std, interpolation, resize_mode)
    preprocess: Optional[Dict[str, Any]] = None


PREPROCESS_FIELDS = tuple(f.name for f in dataclasses.fields(PreprocessCfg))


def preprocess_fields(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The preprocessing open_clip records for weights (a Hub folder's ``preprocess_cfg``, a
    pretrained tag's entry): mean, std, interpolation, resize_mode."""
    return {k: cfg[k] for k in PREPROCESS_FIELDS if k in cfg}


def is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _torch_to_numpy(obj: Dict[str, Any]) -> Dict[str, np.ndarray]:
    import torch

    out = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        value = value.detach().cpu()
        out[name] = (value.float() if value.is_floating_point() else value).numpy()
    return out


def _torch_load(torch, path: str):
    """``torch.load`` of weights only, memory-mapped where the file allows (the zip format
    every recent release uses): fp32 tensors then become numpy views of the file's pages."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_torch_file(path: str, allow_torchscript: bool = False) -> SourceCheckpoint:
    """A ``.pt``/``.pth``/``.bin`` file: a plain (or training) state dict, or TorchScript."""
    try:
        import torch
    except ImportError:
        raise ImportError("reading PyTorch pickles needs torch (pip install torch); "
                          ".safetensors sources need no torch") from None
    if is_torchscript(path):
        if not allow_torchscript:
            raise PermissionError(
                f"{path} is a TorchScript archive (OpenAI's release format). Loading one can "
                "execute code it contains; pass --allow_torchscript (allow_torchscript=True) "
                "if you trust the file.")
        module = torch.jit.load(path, map_location="cpu")
        return SourceCheckpoint(_torch_to_numpy(module.state_dict()), "torchscript")
    try:
        obj = _torch_load(torch, path)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a PyTorch state dict with weights_only=True "
                         f"(untrusted pickles are never fully unpickled): {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # open_clip training checkpoint {"epoch", "state_dict", ...}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # DeCLIP's {"model", "optimizer", "last_iter"}
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return SourceCheckpoint(_torch_to_numpy(obj), "pickle")


def openclip_model_cfg_to_clip(model_cfg: Dict[str, Any]) -> CLIPConfig:
    """open_clip's ``model_cfg`` -> CLIPConfig: the same fields, so a key mindclip does not
    implement is refused by name (an unbuilt tower says which)."""
    return CLIPConfig.from_dict(model_cfg)


def _first_existing(directory: str, names) -> str:
    for name in names:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise FileNotFoundError(f"{directory} holds none of {list(names)}")


def _read_weight_file(path: str, allow_torchscript: bool) -> SourceCheckpoint:
    if path.endswith(".safetensors"):
        # read tensor by tensor as the conversion writes them: a 10 GB checkpoint converts in
        # about its own size of memory, not several copies of it
        tensors, metadata = read_safetensors(path, lazy=True)
        return SourceCheckpoint(tensors, "safetensors", metadata, path)
    if path.endswith(".ckpt"):
        tensors, metadata = read_ckpt(path)
        return SourceCheckpoint(tensors, "ckpt", metadata, path)
    source = read_torch_file(path, allow_torchscript)
    source.path = path
    return source


def read_source(path: str, allow_torchscript: bool = False) -> SourceCheckpoint:
    """Read a checkpoint file or folder of any supported layout."""
    if os.path.isdir(path):
        oc_cfg = os.path.join(path, OPENCLIP_DIR_CONFIG)
        hf_cfg = os.path.join(path, "config.json")
        if os.path.isfile(oc_cfg):
            with open(oc_cfg, encoding="utf-8") as f:
                hub_cfg = json.load(f)
            src = _read_weight_file(_first_existing(path, OPENCLIP_DIR_WEIGHTS), False)
            preprocess = preprocess_fields(hub_cfg.get("preprocess_cfg") or {})
            return SourceCheckpoint(src.tensors, "open_clip_dir", hub_cfg["model_cfg"], path,
                                    preprocess or None)
        if os.path.isfile(hf_cfg):
            with open(hf_cfg, encoding="utf-8") as f:
                cfg = json.load(f)
            src = _read_weight_file(_first_existing(path, HF_DIR_WEIGHTS), False)
            # Hugging Face layouts are repacked (q/k/v concatenated): read whole
            tensors = {k: np.asarray(v) for k, v in src.tensors.items()}
            return SourceCheckpoint(tensors, "hf_dir", cfg, path)
        raise FileNotFoundError(
            f"{path} is a directory but neither an open_clip folder ({OPENCLIP_DIR_CONFIG} + "
            f"{' or '.join(OPENCLIP_DIR_WEIGHTS)}) nor a Hugging Face CLIPModel folder "
            f"(config.json + {' or '.join(HF_DIR_WEIGHTS)})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return _read_weight_file(path, allow_torchscript)
