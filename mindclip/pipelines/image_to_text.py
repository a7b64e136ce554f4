"""``pipeline("image_to_text")``: captions of images from a model that writes text (CoCa),
in Hugging Face's shape: ``[{"generated_text": ...}]`` per image."""
from __future__ import annotations

from typing import Any, Dict, List, Union

import numpy as np

from ..families.base import family_of
from ..generation import decode_captions
from ..registry import register
from .base import ImageInput, ImagePipeline


@register("pipeline", "image_to_text")
class ImageToTextPipeline(ImagePipeline):
    """Per image, ``[{"generated_text": caption}]`` (a list of those for a list of images).

    Keyword arguments of the pipeline or of the call are ``model.generate``'s (open_clip's:
    ``generation_type``, ``seq_len``, ``num_beams``, ``top_k``, ...). Images run in batches of
    ``batch_size`` (the last one padded), so a generation compiles once.
    """

    def __init__(self, model: Any, pretrained: Any = None, batch_size: int = 8, **generate_kwargs: Any):
        super().__init__(model, pretrained, batch_size)
        if not family_of(self.model).generates:
            raise ValueError(f"image_to_text needs a model that writes text (CoCa); this is a "
                             f"{family_of(self.model).name!r} model")
        self.generate_kwargs = generate_kwargs

    def captions(self, images: List[ImageInput], **generate_kwargs: Any) -> List[str]:
        kwargs = dict(self.generate_kwargs, **generate_kwargs)
        batch = np.stack([self.transform(img) for img in images])
        out: List[str] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size and len(batch) > self.batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - n, 0)])
            ids = self.model.generate(chunk, **kwargs)
            out.extend(decode_captions(self.tokenizer, ids)[:n])
        return out

    def __call__(self, images: Union[ImageInput, List[ImageInput]],
                 **generate_kwargs: Any) -> List[Union[Dict[str, str], List[Dict[str, str]]]]:
        items, single = self.as_list(images)
        rows = [[{"generated_text": text}] for text in self.captions(items, **generate_kwargs)]
        return rows[0] if single else rows
