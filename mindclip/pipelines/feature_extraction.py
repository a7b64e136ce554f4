"""``pipeline("feature_extraction")``: L2-normalised image and/or text embeddings."""
from __future__ import annotations

from typing import Dict, List, Sequence, Union

import numpy as np

from ..registry import register
from .base import ImageInput, ImagePipeline


@register("pipeline", "feature_extraction")
class FeatureExtractionPipeline(ImagePipeline):
    """``pipe(images=..., texts=...)`` -> ``{"image_embeds": (N, D), "text_embeds": (M, D)}``."""

    def __call__(self, images: Union[ImageInput, List[ImageInput], None] = None,
                 texts: Union[str, Sequence[str], None] = None) -> Dict[str, np.ndarray]:
        if images is None and texts is None:
            raise ValueError("give images, texts or both")
        out: Dict[str, np.ndarray] = {}
        if images is not None:
            out["image_embeds"] = self.image_features(self.as_list(images)[0])
        if texts is not None:
            out["text_embeds"] = self.text_features([texts] if isinstance(texts, str) else list(texts))
        return out
