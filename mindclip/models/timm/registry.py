"""timm model names -> trunk architectures, as timm's ``@register_model`` functions map a
name to a model class and its ``model_args``.

Each trunk file of this package (``vit.py``, ``eva.py``) defines an architecture record (a
frozen dataclass, a :class:`TrunkArch`) and registers its timm names here at import; a new
timm model is one :func:`register_timm_model` row, a new timm model family one trunk file.
"""
from __future__ import annotations

from dataclasses import dataclass
import importlib
from typing import Dict, List, Optional, Tuple

from ..exceptions import MissingTowerError


@dataclass(frozen=True)
class TrunkArch:
    """What every timm trunk shares: sizes, its default ``global_pool`` and class token.

    Subclasses add their own fields and name the Cell that builds them (``trunk_class``, set
    by the trunk file: the record is the arguments of timm's ``model_args``)."""

    patch_size: int
    width: int          # embed_dim (timm's num_features)
    layers: int         # depth
    heads: int          # num_heads
    mlp_ratio: float = 4.0
    image_size: int = 224
    norm_eps: float = 1e-6
    global_pool: str = "token"
    class_token: bool = True
    fc_norm: Optional[bool] = None          # None: timm's rule (a norm after pooling for avg)
    pre_norm: bool = False                  # a LayerNorm before the blocks; no patch bias then
    no_embed_class: bool = False            # positions for the patches only, not the class token
    pos_embed: bool = True                  # learned absolute positions (not with relative ones)
    pool_heads: Optional[int] = None        # the MAP head's own head count (PE-Core: 8)
    pool_mlp_ratio: Optional[float] = None

    # the pools a trunk's own head implements (timm's reset_classifier), '' = no pooling
    POOLS: Tuple[str, ...] = ("", "token", "avg", "map")

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)  # timm's Mlp(hidden_features=int(dim * mlp_ratio))

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.image_size // self.patch_size, self.image_size // self.patch_size)

    @property
    def prefix_tokens(self) -> int:
        return int(self.class_token)

    @property
    def pool_act(self) -> str:
        """The MAP head's MLP activation."""
        return "gelu"

    def trunk_class(self):
        raise NotImplementedError


TIMM_MODELS: Dict[str, TrunkArch] = {}
TRUNK_MODULES = ("vit", "vit_relpos", "eva")  # the files that register names, imported on first lookup


def _load_trunks() -> None:
    for module in TRUNK_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def register_timm_model(name: str, arch: TrunkArch) -> TrunkArch:
    """Make the timm model ``name`` buildable; a name already known must not change."""
    if name in TIMM_MODELS and TIMM_MODELS[name] != arch:
        raise ValueError(f"timm model {name!r} is already registered with another architecture")
    TIMM_MODELS[name] = arch
    return arch


def timm_arch(name: str, image_size: Optional[int] = None) -> TrunkArch:
    """The architecture of timm model ``name``, whose image size must be ``image_size`` (timm
    builds the name's own size, whatever open_clip's config says, and refuses other inputs)."""
    _load_trunks()
    if name not in TIMM_MODELS:
        raise MissingTowerError(
            f"timm image tower {name!r} is not implemented (a timm image tower: ConvNeXt, FastViT "
            f"(MobileCLIP-S*), ViTamin and Swin are not built yet); "
            f"implemented: {timm_model_names()}")
    arch = TIMM_MODELS[name]
    if image_size is None:
        return arch
    if int(image_size) != arch.image_size:
        raise ValueError(f"image_size {image_size}: timm's {name} takes {arch.image_size}-pixel images")
    return arch


def timm_model_names() -> List[str]:
    """Every timm model name mindclip builds."""
    _load_trunks()
    return sorted(TIMM_MODELS)
