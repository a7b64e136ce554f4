"""mindclip: CLIP-family contrastive image-text models for MindSpore."""
from typing import Any, Callable, Optional, Tuple

from .factory import (create_model, get_model_config, get_tokenizer, list_models,
                      resolve_model_name)
from .models import CLIPConfig, CLIPModel
from .models.reparam import reparameterize_model
from .models.cpu_kernels import set_num_threads
from .models.coca import CoCaConfig, CoCaModel
from .models.dual_encoder import DualEncoderConfig, DualEncoderModel
from .models.siglip import SigLIPConfig, SigLIPModel
from .tokenizer import CLIPTokenizer, tokenize
from .tools.image_tools import load_image
from .hub import list_pretrained  # also registers the Hub as a source of named weights
from .suite import evaluate_suite

__version__ = "0.1.0"


def create_model_and_transforms(model_name: Optional[str] = None, pretrained: Optional[str] = None,
                                **kwargs) -> Tuple[Any, Callable, Callable]:
    """``(model, train_transform, eval_transform)`` as open_clip returns them.

    The eval transform equals open_clip's for the weights loaded: resize (a pretrained tag's
    ``resize_mode`` and ``interpolation``; bicubic shortest side by default), center crop,
    the model's mean/std; the train transform is open_clip's RandomResizedCrop (scale 0.9-1).
    """
    from .data.transforms import model_transform, train_transform

    model = create_model(model_name, pretrained=pretrained, **kwargs)
    pp = model.preprocess
    return model, train_transform(model.image_size, preprocess=pp), model_transform(model)


def create_model_from_pretrained(model_name: str, pretrained: Optional[str] = None,
                                 **kwargs) -> Tuple[Any, Callable]:
    """``(model, eval_transform)`` of named weights (open_clip's function of that name)."""
    model, _, preprocess = create_model_and_transforms(model_name, pretrained=pretrained, **kwargs)
    return model, preprocess


def __getattr__(name: str):
    # Heavier front doors load on first use so that `import mindclip` stays light.
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    if name == "pipeline":
        from .pipelines import pipeline

        return pipeline
    if name == "generation":
        import importlib

        return importlib.import_module(".generation", __name__)
    raise AttributeError(f"module 'mindclip' has no attribute {name!r}")


__all__ = ["Trainer", "pipeline", "reparameterize_model", "CLIPConfig", "CLIPModel", "CLIPTokenizer", "CoCaConfig",
           "CoCaModel", "DualEncoderConfig", "DualEncoderModel", "SigLIPConfig", "SigLIPModel", "create_model", "create_model_and_transforms",
           "create_model_from_pretrained", "list_pretrained", "get_model_config", "set_num_threads",
           "get_tokenizer", "list_models", "load_image", "resolve_model_name", "tokenize",
           "evaluate_suite", "__version__"]
