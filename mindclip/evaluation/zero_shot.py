"""Zero-shot classification: a text classifier from class names x templates, then
top-k accuracy of image features against it."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
    weights = classifier_weights(lambda texts: encode_texts(model, tokenizer, texts, batch_size),
                                 class_names, templates)
    if cache:
        _CACHE[key] = weights
    return weights


def classifier_weights(encode: Callable[[List[str]], np.ndarray], class_names: Sequence[str],
                       templates: Sequence[str]) -> np.ndarray:
    """``(embed_dim, num_classes)``: per class, the normalised mean of the normalised features
    ``encode`` gives its prompts (every template filled with the class name)."""
    feats = encode([t.format(c) for c in class_names for t in templates])
    feats = feats.reshape(len(class_names), len(templates), -1).mean(axis=1)
    return (feats / np.linalg.norm(feats, axis=-1, keepdims=True)).T.astype(np.float32)


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
