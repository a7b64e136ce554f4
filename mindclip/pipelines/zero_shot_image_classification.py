"""``pipeline("zero_shot_image_classification")``: score images against free-text labels."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..evaluation.metrics import topk_labels
from ..families.base import family_of
from ..registry import register
from .base import ImageInput, ImagePipeline


@register("pipeline", "zero_shot_image_classification")
class ZeroShotImageClassificationPipeline(ImagePipeline):
    """Per image, ``[{"score", "label"}, ...]`` sorted by score: the model family's label
    scores (CLIP: softmax over the labels; SigLIP: independent sigmoids).

    Label embeddings are computed once per (labels, template) and reused.
    """

    def __init__(self, model, candidate_labels: Optional[Sequence[str]] = None,
                 hypothesis_template: str = "a photo of a {}.", top_k: Optional[int] = None,
                 pretrained: Optional[str] = None, batch_size: int = 8):
        super().__init__(model, pretrained, batch_size)
        self.candidate_labels = list(candidate_labels) if candidate_labels else None
        self.hypothesis_template = hypothesis_template
        self.top_k = top_k
        self._label_cache: Dict = {}

    def _label_features(self, labels: Sequence[str], template: str) -> np.ndarray:
        key = (tuple(labels), template)
        if key not in self._label_cache:
            if "{}" not in template:
                raise ValueError(f"hypothesis_template needs a '{{}}' for the label: {template!r}")
            self._label_cache[key] = self.text_features([template.format(l) for l in labels])
        return self._label_cache[key]

    def __call__(self, images: Union[ImageInput, List[ImageInput]],
                 candidate_labels: Optional[Sequence[str]] = None,
                 hypothesis_template: Optional[str] = None, top_k: Optional[int] = None):
        labels = list(candidate_labels or self.candidate_labels or [])
        if not labels:
            raise ValueError("candidate_labels is empty: give the labels to choose from")
        template = hypothesis_template or self.hypothesis_template
        k = top_k or self.top_k or len(labels)
        items, single = self.as_list(images)
        scores = family_of(self.model).label_scores(
            self.model, self.image_features(items), self._label_features(labels, template))
        results = topk_labels(scores, labels, k)
        return results[0] if single else results
