"""Which Cell a tower config builds (open_clip's ``_build_vision_tower`` /
``_build_text_tower``): every model that has CLIP towers asks here."""
from __future__ import annotations

from mindspore import nn

from .config import CLIPTextCfg, TimmVisionCfg
from .hf_text import HFTextTower
from .resnet import ModifiedResNet
from .store import fetch_hf_config
from .text import TextTransformer
from .timm.head import TimmImageTower
from .vision import VisionTransformer


def build_vision_tower(cfg, embed_dim: int, quick_gelu: bool) -> nn.Cell:
    """A timm tower for a :class:`TimmVisionCfg` (open_clip's ``timm_model_name``); else a
    ModifiedResNet when ``cfg.layers`` lists stage depths, else open_clip's ViT."""
    if isinstance(cfg, TimmVisionCfg):
        return TimmImageTower(cfg, embed_dim)
    if cfg.is_resnet:
        return ModifiedResNet(cfg, embed_dim)
    return VisionTransformer(cfg, embed_dim, quick_gelu)


def build_text_tower(cfg: CLIPTextCfg, embed_dim: int, quick_gelu: bool) -> nn.Cell:
    """CLIP's text transformer, or a Hugging Face encoder (``hf_model_name``) whose
    ``config.json`` is fetched once through the weight store's sources and recorded in
    ``cfg.hf_model_config``, so the weights written later carry the architecture."""
    if cfg.hf_model_name:
        if cfg.hf_model_config is None:
            cfg.hf_model_config = fetch_hf_config(cfg.hf_model_name)
        return HFTextTower(cfg, embed_dim, cfg.hf_model_config)
    return TextTransformer(cfg, embed_dim, quick_gelu)
