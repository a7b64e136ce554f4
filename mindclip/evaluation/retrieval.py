"""Image-text retrieval evaluation over a caption dataset (all captions of every image)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from ..data.base import ImageTextSource
from ..data.loader import all_captions
from .encode import encode_loader, encode_texts
from .metrics import retrieval_metrics


def retrieval_evaluate(model: Any, tokenizer: Callable, source: ImageTextSource,
                       loader, batch_size: int, text_batch_size: int = 64) -> Dict[str, float]:
    """R@1/5/10 both ways over every image and every distinct caption: a caption shared by
    several images (the digits' "a photo of the number seven.") is one text whose positives
    are all of them. Images that could not be read are left out with their captions (and
    counted in ``skipped_images``)."""
    image_feats, indices = encode_loader(model, loader, batch_size)
    texts, owners = all_captions(source)
    kept = {int(i): row for row, i in enumerate(indices)}
    positives: Dict[str, List[int]] = {}
    for text, owner in zip(texts, owners):
        if owner in kept and kept[owner] not in positives.setdefault(text, []):
            positives[text].append(kept[owner])
    unique = list(positives)
    text_feats = encode_texts(model, tokenizer, unique, text_batch_size)
    metrics = retrieval_metrics(image_feats, text_feats, [positives[t] for t in unique])
    metrics["skipped_images"] = float(len(source) - len(kept))
    return metrics
