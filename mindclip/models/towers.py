"""Which Cell a tower config builds (open_clip's ``_build_vision_tower`` /
``_build_text_tower``): every model that has CLIP towers asks here."""
from __future__ import annotations

from mindspore import nn

from .config import CLIPTextCfg, CLIPVisionCfg
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vision import VisionTransformer


def build_vision_tower(cfg: CLIPVisionCfg, embed_dim: int, quick_gelu: bool) -> nn.Cell:
    """A ModifiedResNet when ``cfg.layers`` lists stage depths, else a ViT."""
    if cfg.is_resnet:
        return ModifiedResNet(cfg, embed_dim)
    return VisionTransformer(cfg, embed_dim, quick_gelu)


def build_text_tower(cfg: CLIPTextCfg, embed_dim: int, quick_gelu: bool) -> nn.Cell:
    return TextTransformer(cfg, embed_dim, quick_gelu)
