"""Shared machinery of the inference pipelines: model resolution and image batching."""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..data.transforms import model_transform
from ..evaluation.encode import encode_image_batch, encode_texts
from ..factory import create_model, get_tokenizer, list_models

ImageInput = Union[str, "PIL.Image.Image", np.ndarray]  # noqa: F821  (PIL imported lazily)


def resolve_model(model: Any, pretrained: Optional[str] = None) -> Any:
    """A model of any family from an instance, an architecture name (``ViT-B-32``,
    ``clip_vit_b_32``), or a converted checkpoint file/folder that records its architecture."""
    if model is not None and not isinstance(model, str):
        if pretrained:
            raise ValueError("pass pretrained weights when building from a name, not with an instance")
        model.set_train(False)
        return model
    if model is None:
        raise ValueError(f"a pipeline needs a model: a name from {list_models()}, a path, or a model")
    if os.path.exists(model):
        return create_model(pretrained=model)
    # A name means the weights installed under it (an error says how to install them).
    return create_model(model, pretrained=pretrained or True)


class ImagePipeline:
    """Holds a model, its tokenizer and its eval transform; batches images with a fixed
    batch shape so a graph-mode model compiles once."""

    def __init__(self, model: Any, pretrained: Optional[str] = None, batch_size: int = 8):
        self.model = resolve_model(model, pretrained)
        self.tokenizer = get_tokenizer(self.model)
        self.transform = model_transform(self.model)
        self.batch_size = int(batch_size)

    @staticmethod
    def as_list(inputs: Any) -> Tuple[List[Any], bool]:
        """(list of inputs, whether a single input was given)."""
        if isinstance(inputs, (list, tuple)):
            return list(inputs), False
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            return list(inputs), False
        return [inputs], True

    def image_features(self, images: Sequence[ImageInput]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.model.embed_dim), np.float32)
        batch = np.stack([self.transform(img) for img in images])
        return encode_image_batch(self.model, batch, self.batch_size)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        return encode_texts(self.model, self.tokenizer, list(texts), max(self.batch_size, 1))
