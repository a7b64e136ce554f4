"""Model Cells and the family-agnostic factory (no data, training, convert or torch imports)."""
from .clip import CLIPModel, l2_normalize
from .config import CLIPConfig, CLIPTextCfg, CLIPVisionCfg
from .factory import (MODEL_ALIASES, create_model, get_model_config, get_tokenizer, list_models,
                      load_pretrained, model_family, resolve_model_name)
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vision import VisionTransformer

__all__ = ["CLIPModel", "CLIPConfig", "CLIPTextCfg", "CLIPVisionCfg", "ModifiedResNet",
           "TextTransformer", "VisionTransformer", "MODEL_ALIASES", "create_model",
           "get_model_config", "get_tokenizer", "list_models", "load_pretrained", "model_family",
           "resolve_model_name", "l2_normalize"]
