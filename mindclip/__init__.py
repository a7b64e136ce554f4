"""mindclip: CLIP-family contrastive image-text models for MindSpore."""
from typing import Any, Callable, Optional, Tuple

from .models import (CLIPConfig, CLIPModel, create_model, get_model_config, get_tokenizer,
                     list_models, resolve_model_name)
from .models.dual_encoder import DualEncoderConfig, DualEncoderModel
from .tokenizer import CLIPTokenizer, tokenize
from .tools.image_tools import load_image

__version__ = "0.1.0"


def create_model_and_transforms(model_name: Optional[str] = None, pretrained: Optional[str] = None,
                                **kwargs) -> Tuple[Any, Callable, Callable]:
    """``(model, train_transform, eval_transform)`` as open_clip returns them.

    The eval transform equals open_clip's (bicubic shortest-side resize, center crop,
    OpenAI mean/std); the train transform is open_clip's RandomResizedCrop(scale 0.9-1).
    """
    from .data.transforms import image_transform, train_transform

    model = create_model(model_name, pretrained=pretrained, **kwargs)
    mean, std = model.image_mean, model.image_std
    return (model, train_transform(model.image_size, mean=mean, std=std),
            image_transform(model.image_size, mean, std))


def __getattr__(name: str):
    # Heavier front doors load on first use so that `import mindclip` stays light.
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    if name == "pipeline":
        from .pipelines import pipeline

        return pipeline
    raise AttributeError(f"module 'mindclip' has no attribute {name!r}")


__all__ = ["Trainer", "pipeline", "CLIPConfig", "CLIPModel", "CLIPTokenizer", "DualEncoderConfig",
           "DualEncoderModel", "create_model", "create_model_and_transforms", "get_model_config",
           "get_tokenizer", "list_models", "load_image", "resolve_model_name", "tokenize",
           "__version__"]
