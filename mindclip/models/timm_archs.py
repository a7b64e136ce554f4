"""Architectures of the timm image towers open_clip's configs name (``timm_model_name``), one
row per timm name, read from timm 1.x's ``vision_transformer.py`` (the ``model_args`` of each
``@register_model`` function; ``act_layer`` GELU unless it says ``gelu_tanh``; timm's
LayerNorm eps 1e-6; the image size is the name's suffix).

Only SigLIP's ViTs (no class token, the MAP head) are built today. A new name is one
:func:`register_timm_vit` call, as a new timm model is one ``@register_model`` there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class TimmViTArch:
    """What timm's ``VisionTransformer(**model_args)`` builds for one name."""

    patch_size: int
    width: int          # embed_dim
    layers: int         # depth
    heads: int          # num_heads
    mlp_ratio: float = 4.0
    act: str = "gelu"   # gelu | gelu_tanh
    image_size: int = 224
    norm_eps: float = 1e-6
    global_pool: str = "map"
    class_token: bool = False

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)  # timm's Mlp(hidden_features=int(dim * mlp_ratio))


_B = dict(width=768, layers=12, heads=12)
_L = dict(width=1024, layers=24, heads=16)
_SO400M = dict(width=1152, layers=27, heads=16, mlp_ratio=3.7362)
_GOPT = dict(width=1536, layers=40, heads=16)
_TANH = dict(act="gelu_tanh")

TIMM_VITS: Dict[str, TimmViTArch] = {}


def register_timm_vit(name: str, arch: TimmViTArch) -> TimmViTArch:
    """Make ``name`` (a timm model name) buildable; a name already known must not change."""
    if name in TIMM_VITS and TIMM_VITS[name] != arch:
        raise ValueError(f"timm model {name!r} is already registered with another architecture")
    TIMM_VITS[name] = arch
    return arch


for _name, _patch, _size, _dims in (
        ("vit_base_patch32_siglip_256", 32, 256, dict(_B, **_TANH)),
        ("vit_base_patch16_siglip_224", 16, 224, _B),
        ("vit_base_patch16_siglip_256", 16, 256, _B),
        ("vit_base_patch16_siglip_384", 16, 384, _B),
        ("vit_base_patch16_siglip_512", 16, 512, _B),
        ("vit_large_patch16_siglip_256", 16, 256, _L),
        ("vit_large_patch16_siglip_384", 16, 384, _L),
        ("vit_large_patch16_siglip_512", 16, 512, dict(_L, **_TANH)),
        ("vit_so400m_patch14_siglip_224", 14, 224, _SO400M),
        ("vit_so400m_patch14_siglip_378", 14, 378, _SO400M),
        ("vit_so400m_patch14_siglip_384", 14, 384, _SO400M),
        ("vit_so400m_patch16_siglip_256", 16, 256, dict(_SO400M, **_TANH)),
        ("vit_so400m_patch16_siglip_384", 16, 384, dict(_SO400M, **_TANH)),
        ("vit_so400m_patch16_siglip_512", 16, 512, dict(_SO400M, **_TANH)),
        ("vit_giantopt_patch16_siglip_256", 16, 256, dict(_GOPT, **_TANH)),
        ("vit_giantopt_patch16_siglip_384", 16, 384, dict(_GOPT, **_TANH))):
    register_timm_vit(_name, TimmViTArch(patch_size=_patch, image_size=_size, **_dims))


def timm_vit_arch(name: str, image_size: int) -> TimmViTArch:
    """The architecture of timm model ``name``, whose image size must be ``image_size`` (timm
    builds the name's own size, whatever open_clip's config says, and refuses other inputs)."""
    if name not in TIMM_VITS:
        raise KeyError(f"timm image tower {name!r} is not implemented; implemented: {sorted(TIMM_VITS)}")
    arch = TIMM_VITS[name]
    if int(image_size) != arch.image_size:
        raise ValueError(f"image_size {image_size}: timm's {name} takes {arch.image_size}-pixel images")
    return arch
