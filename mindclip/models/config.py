"""Architecture configuration of CLIP towers.

Field names follow open_clip's ``CLIPVisionCfg``/``CLIPTextCfg`` so that its
JSON model configs can be read unchanged; keys we do not implement are rejected
with the list of the valid ones instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .diff import config_differences
from .pretrained import PretrainedConfigMixin


def _from_dict(cls, data: Dict[str, Any], where: str):
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in {where}; valid keys are: {sorted(valid)}")
    return cls(**data)


@dataclass
class CLIPVisionCfg:
    """Image tower: a ViT when ``layers`` is an int, a ModifiedResNet when it is a 4-tuple."""

    layers: Union[Tuple[int, int, int, int], List[int], int] = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: Optional[int] = 16
    image_size: int = 224

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, (list, tuple))

    @property
    def heads(self) -> int:
        # ModifiedResNet's attention pool works on width * 32 channels (open_clip's rule).
        if self.is_resnet:
            return self.width * 32 // self.head_width
        return self.width // self.head_width

    def __post_init__(self):
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        if self.is_resnet and len(self.layers) != 4:
            raise ValueError(f"a ResNet image tower needs 4 stage depths, got {self.layers}")
        if not self.is_resnet:
            if not self.patch_size:
                raise ValueError("a ViT image tower needs patch_size")
            if self.image_size % self.patch_size:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        pooled_width = self.width * 32 if self.is_resnet else self.width
        if pooled_width % self.head_width:
            raise ValueError(f"attention width {pooled_width} is not a multiple of "
                             f"head_width {self.head_width}")


@dataclass
class CLIPTextCfg:
    """Causal text transformer pooled at the end-of-text token (the highest id).
    ``proj_bias``: the projection is a Linear layer with bias (open_clip's option; DeCLIP)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    proj_bias: bool = False

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not a multiple of heads {self.heads}")


@dataclass
class CLIPConfig(PretrainedConfigMixin):
    """A whole CLIP model: shared embedding size, both towers and the activation."""

    embed_dim: int = 512
    vision_cfg: CLIPVisionCfg = field(default_factory=CLIPVisionCfg)
    text_cfg: CLIPTextCfg = field(default_factory=CLIPTextCfg)
    quick_gelu: bool = False

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "CLIPConfig":
        data = dict(data)
        vision = data.pop("vision_cfg", {})
        text = data.pop("text_cfg", {})
        top = _from_dict(cls, data, "model config")
        top.vision_cfg = vision if isinstance(vision, CLIPVisionCfg) else _from_dict(
            CLIPVisionCfg, vision, "vision_cfg")
        top.text_cfg = text if isinstance(text, CLIPTextCfg) else _from_dict(
            CLIPTextCfg, text, "text_cfg")
        return top

    @classmethod
    def from_json(cls, path: str) -> "CLIPConfig":
        with open(path, "r", encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["vision_cfg"]["layers"] = (list(self.vision_cfg.layers) if self.vision_cfg.is_resnet
                                     else self.vision_cfg.layers)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def differences(self, other: "CLIPConfig") -> List[str]:
        """Human-readable list of fields where ``other`` differs from this config."""
        return config_differences(self.to_dict(), other.to_dict())
