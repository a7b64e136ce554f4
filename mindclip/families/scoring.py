"""How a family turns image and label (text) features into label scores: CLIP's softmax over
the labels of ``exp(logit_scale) * cos``, SigLIP's independent sigmoids of
``exp(logit_scale) * cos + logit_bias`` (what Hugging Face's zero-shot pipeline returns for
SigLIP). A family names its function in its record (``Family.label_scores``)."""
from __future__ import annotations

from typing import Any

import numpy as np


def _scale(model: Any) -> float:
    return float(np.exp(model.logit_scale.asnumpy()))


def softmax_scores(model: Any, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
    """``(images, labels)`` probabilities summing to one per image, from unit features."""
    logits = _scale(model) * image_features @ text_features.T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid_scores(model: Any, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
    """``(images, labels)`` independent probabilities ``sigmoid(exp(logit_scale) * cos +
    logit_bias)``, from unit features."""
    logits = _scale(model) * image_features @ text_features.T + float(model.logit_bias.asnumpy())
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
