"""Hugging Face's and MindFormers' front doors on every model and config class:
``Model.from_pretrained(name | folder | file)``, ``model.save_pretrained(folder)``,
``Model.show_support_list()`` and ``Config.from_pretrained(name | folder)``. A folder written
by ``save_pretrained`` (weights + ``config.json`` + tokenizer files) is accepted by every front
door; a name means real weights (the weight store, or fetched by name), never random ones.

The implementations live on the front-door floor (:mod:`mindclip.factory`, which resolves names
through the family registry and the Hub); it registers them here when ``mindclip`` is
imported, so the model layer imports nothing above it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ..normalization import PreprocessCfg

_FRONT_DOORS: Dict[str, Callable[..., Any]] = {}


def register_front_doors(**implementations: Callable[..., Any]) -> None:
    """Called by :mod:`mindclip.factory` with the functions below dispatch to."""
    _FRONT_DOORS.update(implementations)


def _front_door(name: str) -> Callable[..., Any]:
    # importing any mindclip module imports the package first, whose __init__ imports the factory
    return _FRONT_DOORS[name]


class PretrainedModelMixin:
    """Mixed into each family's model class (which sets ``family``)."""

    family: str = ""
    # the weights' preprocessing as loaded (a tag's, an open_clip folder's), else None: the
    # family's statistics (image_mean / image_std) with open_clip's default resize
    preprocess_cfg: Optional[Dict[str, Any]] = None

    @property
    def preprocess(self) -> PreprocessCfg:
        """The one preprocessing record of this model's weights (mean, std, interpolation,
        resize mode, fill), which every loader, pipeline and transform takes whole."""
        return PreprocessCfg.from_dict(self.preprocess_cfg or {}, self.image_mean, self.image_std)

    def set_preprocess(self, cfg: Dict[str, Any]) -> None:
        """Record the preprocessing the weights were trained with (validated as a
        :class:`PreprocessCfg`); ``save_pretrained`` writes it with the weights."""
        record = PreprocessCfg.from_dict(cfg, self.image_mean, self.image_std)
        self.preprocess_cfg = record.to_dict()
        self.image_mean, self.image_std = record.mean, record.std

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> Any:
        """A model from a ``save_pretrained`` folder, a converted file, or a name (MindFormers'
        ``clip_vit_b_32``, an installed name): real weights, or an error that says how to get
        them."""
        return _front_door("model_from_pretrained")(cls, name_or_path)

    def save_pretrained(self, folder: str) -> str:
        """Write ``mindclip_model.safetensors`` + ``config.json`` (+ tokenizer files) into
        ``folder``; ``from_pretrained(folder)`` restores the model bit for bit."""
        return _front_door("save_pretrained")(self, folder)

    @classmethod
    def show_support_list(cls) -> List[str]:
        """Prints (MindFormers' format) and returns the names this class loads: MindFormers'
        names first, then every architecture of the family."""
        return _front_door("show_support_list")(cls)


class PretrainedConfigMixin:
    """Mixed into each family's config class."""

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> Any:
        """The architecture of a name (no weights needed) or of a saved folder / file."""
        return _front_door("config_from_pretrained")(cls, name_or_path)
