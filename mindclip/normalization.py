"""Per-channel image statistics models are trained with, shared by the models (which record
theirs) and the data layer (which normalises with them), and the whole preprocessing record
(:class:`PreprocessCfg`) a model carries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

# OpenAI's CLIP (and everything trained from it: open_clip, the dual encoder's ViT).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's (torchvision's), which DeCLIP trains and evaluates with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATION_NAMES = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class PreprocessCfg:
    """How images become a model's input, as open_clip's ``PreprocessCfg`` records it for
    weights: per-channel ``mean``/``std``, ``interpolation`` (``bicubic``, ``bilinear``,
    ``nearest``), ``resize_mode`` (``shortest`` side + center crop, ``squash`` to a square,
    ``longest`` side + padding with ``fill_color``). One record travels with the model and is
    handed whole to every loader, pipeline and transform."""

    mean: Tuple[float, ...] = OPENAI_MEAN
    std: Tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} is not one of {list(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATION_NAMES:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {list(INTERPOLATION_NAMES)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels, got {self.mean} / {self.std}")

    @classmethod
    def from_dict(cls, data: Dict[str, Any], mean: Sequence[float] = OPENAI_MEAN,
                  std: Sequence[float] = OPENAI_STD) -> "PreprocessCfg":
        """From open_clip's ``preprocess_cfg`` dict (its other keys, ``size`` and ``mode``, are
        the model's); ``mean``/``std`` where the dict has none (the model's own)."""
        fields = {k: data[k] for k in ("interpolation", "resize_mode", "fill_color") if k in data}
        return cls(mean=tuple(data.get("mean", mean)), std=tuple(data.get("std", std)), **fields)

    def to_dict(self) -> Dict[str, Any]:
        """open_clip's ``preprocess_cfg`` keys (``size`` and ``mode`` added by the writer)."""
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "resize_mode": self.resize_mode, "fill_color": self.fill_color}

    @property
    def is_default_resize(self) -> bool:
        """Bicubic shortest side + center crop (OpenAI's, open_clip's default)."""
        return self.resize_mode == "shortest" and self.interpolation == "bicubic"
