"""Model Cells, their configs and weight I/O (no data, training, convert, Hub or torch
imports); names become models on the front-door floor (:mod:`mindclip.factory`)."""
from .clip import CLIPModel, l2_normalize
from .config import CLIPConfig, CLIPTextCfg, CLIPVisionCfg
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vision import VisionTransformer

__all__ = ["CLIPModel", "CLIPConfig", "CLIPTextCfg", "CLIPVisionCfg", "ModifiedResNet",
           "TextTransformer", "VisionTransformer", "l2_normalize"]
