"""Image-text retrieval evaluation over a caption dataset (all captions of every image)."""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np

from ..data.base import ImageTextSource
from ..data.loader import all_captions
from .encode import encode_loader, encode_texts
from .metrics import retrieval_metrics


def retrieval_evaluate(model: Any, tokenizer: Callable, source: ImageTextSource,
                       loader, batch_size: int, text_batch_size: int = 64) -> Dict[str, float]:
    """R@1/5/10 both ways. Images that could not be read are left out with their captions
    (and counted in ``skipped_images``)."""
    image_feats, indices = encode_loader(model, loader, batch_size)
    texts, owners = all_captions(source)
    kept = {int(i): row for row, i in enumerate(indices)}
    keep_text = [j for j, o in enumerate(owners) if o in kept]
    text_feats = encode_texts(model, tokenizer, [texts[j] for j in keep_text], text_batch_size)
    text_to_image = np.array([kept[owners[j]] for j in keep_text])
    metrics = retrieval_metrics(image_feats, text_feats, text_to_image)
    metrics["skipped_images"] = float(len(source) - len(kept))
    return metrics
