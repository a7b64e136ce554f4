"""``pipeline("image_text_retrieval")``: index a folder of images once, query it with text."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..data.classification import IMAGE_EXTENSIONS
from ..data.loader import decode_rgb
from ..registry import register
from .base import ImagePipeline


@register("pipeline", "image_text_retrieval")
class ImageTextRetrievalPipeline(ImagePipeline):
    """``pipe.index(folder)`` embeds every readable image once; ``pipe(texts, top_k)`` returns
    per query ``[{"score", "image"}, ...]`` best first (cosine similarity)."""

    def __init__(self, model, images: Optional[Union[str, Sequence[str]]] = None,
                 pretrained: Optional[str] = None, batch_size: int = 8, top_k: int = 5):
        super().__init__(model, pretrained, batch_size)
        self.top_k = top_k
        self.paths: List[str] = []
        self.features = np.zeros((0, self.model.embed_dim), np.float32)
        self.skipped: List[str] = []
        if images is not None:
            self.index(images)

    def index(self, images: Union[str, Sequence[str]]) -> int:
        """Add a folder (searched recursively) or a list of image paths; returns the count.
        Unreadable files are skipped and listed in ``skipped``."""
        if isinstance(images, str):
            if not os.path.isdir(images):
                raise FileNotFoundError(f"image folder not found: {images}")
            paths = sorted(os.path.join(d, f) for d, _, files in os.walk(images) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
        else:
            paths = list(images)
        readable = []
        for start in range(0, len(paths), 256):
            arrays = []
            for p in paths[start:start + 256]:
                arr = decode_rgb(p)
                if arr is None:
                    self.skipped.append(p)
                else:
                    arrays.append(arr)
                    readable.append(p)
            if arrays:
                self.features = np.concatenate([self.features, self.image_features(arrays)])
        self.paths += readable
        return len(readable)

    def __call__(self, texts: Union[str, Sequence[str]], top_k: Optional[int] = None):
        if not self.paths:
            raise ValueError("the index is empty: call index(folder) first")
        single = isinstance(texts, str)
        queries = [texts] if single else list(texts)
        sims = self.text_features(queries) @ self.features.T
        k = min(top_k or self.top_k, len(self.paths))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        results: List[List[Dict]] = [[{"score": float(row[j]), "image": self.paths[j]} for j in idx]
                                     for row, idx in zip(sims, order)]
        return results[0] if single else results
