"""Zero-shot classification: a text classifier from class names x templates, then
top-k accuracy of image features against it."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .encode import encode_loader, encode_texts
from .metrics import classification_metrics

_CACHE: Dict[Tuple, np.ndarray] = {}


def build_classifier(model: Any, tokenizer: Callable, class_names: Sequence[str],
                     templates: Sequence[str], batch_size: int = 64, cache: bool = True) -> np.ndarray:
    """``(embed_dim, num_classes)`` weights: per class, the normalised mean of its normalised
    template embeddings (CLIP's prompt ensembling). Cached per model and prompt set unless
    ``cache`` is False (training changes the weights)."""
    key = (id(model), tuple(class_names), tuple(templates))
    if cache and key in _CACHE:
        return _CACHE[key]
    texts = [t.format(c) for c in class_names for t in templates]
    feats = encode_texts(model, tokenizer, texts, batch_size)
    feats = feats.reshape(len(class_names), len(templates), -1).mean(axis=1)
    weights = (feats / np.linalg.norm(feats, axis=-1, keepdims=True)).T.astype(np.float32)
    if cache:
        _CACHE[key] = weights
    return weights


def clear_classifier_cache() -> None:
    _CACHE.clear()


def zero_shot_evaluate(model: Any, loader, classifier: np.ndarray,
                       class_names: Sequence[str], batch_size: int,
                       top_k: Sequence[int] = (1, 5), logit_scale: Optional[float] = 100.0) -> Dict:
    """Metrics of ``classifier`` on every image of ``loader`` (``(images, labels)`` batches)."""
    feats, labels = encode_loader(model, loader, batch_size)
    logits = (logit_scale or 1.0) * feats @ classifier
    metrics = classification_metrics(logits, labels, class_names, top_k)
    metrics["skipped_images"] = int(getattr(loader, "skipped", 0))
    return metrics
