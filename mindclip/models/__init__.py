"""CLIP-family models as MindSpore Cells (no data, training or torch imports here)."""
from .clip import CLIPModel, l2_normalize
from .config import CLIPConfig, CLIPTextCfg, CLIPVisionCfg
from .factory import (MODEL_ALIASES, create_model, get_model_config, list_models,
                      load_pretrained, resolve_model_name)
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vision import VisionTransformer

__all__ = ["CLIPModel", "CLIPConfig", "CLIPTextCfg", "CLIPVisionCfg", "ModifiedResNet",
           "TextTransformer", "VisionTransformer", "MODEL_ALIASES", "create_model",
           "get_model_config", "list_models", "load_pretrained", "resolve_model_name",
           "l2_normalize"]
