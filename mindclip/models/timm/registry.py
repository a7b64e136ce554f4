"""timm model names -> trunk architectures, as timm's ``@register_model`` functions map a
name to a model class and its ``model_args``.

Each trunk file of this package (``vit.py``, ``eva.py``, ``convnext.py``, ...) defines an
architecture record (a frozen dataclass, a :class:`TimmArch`; :class:`TrunkArch` for the
ViT-shaped ones) and registers its timm names here at import; a new
timm model is one :func:`register_timm_model` row, a new timm model family one trunk file.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import importlib
from typing import ClassVar, Dict, List, Optional, Tuple

from ..exceptions import MissingTowerError


@dataclass(frozen=True, kw_only=True)
class TimmArch:
    """What every timm trunk record holds: the image size it is built for and its default
    ``global_pool``. Subclasses add their own fields (the arguments of timm's ``model_args``)
    and name the Cell that builds them (``trunk_class``). ``ANY_IMAGE_SIZE``: a fully
    convolutional trunk, built at whatever size open_clip's config gives (timm creates it
    without an image size); the others take their name's own size only."""

    image_size: int = 224
    global_pool: str = "avg"
    drop_path_rate: float = 0.0  # timm's default stochastic depth, when open_clip sets none

    POOLS: ClassVar[Tuple[str, ...]] = ("", "avg")  # the pools its own head implements
    ANY_IMAGE_SIZE: ClassVar[bool] = False

    @property
    def any_image_size(self) -> bool:
        """Whether the trunk can be built at any image size (``ANY_IMAGE_SIZE``)."""
        return self.ANY_IMAGE_SIZE

    @property
    def num_features(self) -> int:
        """The width of the trunk's pooled output (timm's ``num_features``)."""
        raise NotImplementedError

    def trunk_class(self):
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TrunkArch(TimmArch):
    """What timm's ViT-shaped trunks share: sizes, class token, positions, norms."""

    patch_size: int
    width: int          # embed_dim (timm's num_features)
    layers: int         # depth
    heads: int          # num_heads
    mlp_ratio: float = 4.0
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
    POOLS: ClassVar[Tuple[str, ...]] = ("", "token", "avg", "map")

    @property
    def num_features(self) -> int:
        return self.width

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


TIMM_MODELS: Dict[str, TrunkArch] = {}
TRUNK_MODULES = ("vit", "vit_relpos", "eva", "convnext", "vitamin", "fastvit", "swin")  # the files that register names, imported on first lookup


def _load_trunks() -> None:
    for module in TRUNK_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def register_timm_model(name: str, arch: TimmArch) -> TimmArch:
    """Make the timm model ``name`` buildable; a name already known must not change."""
    if name in TIMM_MODELS and TIMM_MODELS[name] != arch:
        raise ValueError(f"timm model {name!r} is already registered with another architecture")
    TIMM_MODELS[name] = arch
    return arch


def timm_arch(name: str, image_size: Optional[int] = None) -> TimmArch:
    """The architecture of timm model ``name`` for ``image_size``: a fully convolutional
    trunk's at that size, any other's only at its own size (timm builds the name's own size,
    whatever open_clip's config says, and refuses other inputs)."""
    _load_trunks()
    if name not in TIMM_MODELS:
        raise MissingTowerError(
            f"timm image tower {name!r} is not implemented; implemented: {timm_model_names()}")
    arch = TIMM_MODELS[name]
    if image_size is None:
        return arch
    if arch.any_image_size:
        return replace(arch, image_size=int(image_size))
    if int(image_size) != arch.image_size:
        raise ValueError(f"image_size {image_size}: timm's {name} takes {arch.image_size}-pixel images")
    return arch


def timm_model_names() -> List[str]:
    """Every timm model name mindclip builds."""
    _load_trunks()
    return sorted(TIMM_MODELS)
