"""Checks at the public boundary (``encode_image``, ``encode_text``, ``model(...)``), in the
user's terms, before anything reaches MindSpore (whose errors name its kernels: "For
'AddExt', input.shape and other.shape need to broadcast", a ``Gather`` C++ stack). One
function per kind of input, shared by every family."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


def _shape_dtype(x: Any):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"expected a mindspore.Tensor or numpy array, got {type(x).__name__}")
    return tuple(int(d) for d in x.shape), str(x.dtype).lower()


def _values(x: Any) -> np.ndarray:
    return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)


def check_images(images: Any, image_size: int) -> None:
    """A float batch ``(B, 3, image_size, image_size)``."""
    shape, dtype = _shape_dtype(images)
    expected = f"(batch, 3, {image_size}, {image_size})"
    if len(shape) != 4:
        raise ValueError(f"images: expected a batch of shape {expected}, got shape {shape}"
                         + (" (a single image? add a batch axis: images[None])" if len(shape) == 3 else ""))
    if shape[1] != 3:
        raise ValueError(f"images: expected 3 channels first, {expected}, got shape {shape}"
                         + (" (channels last? transpose to (B, C, H, W))" if shape[-1] == 3 else ""))
    if shape[2:] != (image_size, image_size):
        raise ValueError(f"images: this model takes {image_size}x{image_size} images (its image_size), "
                         f"got {shape[2]}x{shape[3]}; resize them with the model's transform "
                         "(mindclip.create_model_and_transforms)")
    if "float" not in dtype:
        raise TypeError(f"images: expected float values (normalised pixels), got {dtype}; use the "
                        "model's transform (mindclip.create_model_and_transforms)")


def check_token_ids(ids: Any, vocab_size: Optional[int], max_length: Optional[int],
                    what: str = "token ids") -> None:
    """An integer batch ``(B, L)`` with ``L <= max_length`` and ids in ``[0, vocab_size)``."""
    shape, dtype = _shape_dtype(ids)
    if len(shape) != 2:
        raise ValueError(f"{what}: expected a batch of shape (batch, length), got shape {shape}"
                         + (" (add a batch axis: ids[None])" if len(shape) == 1 else ""))
    if "int" not in dtype:
        raise TypeError(f"{what}: expected integer ids, got {dtype}; use the model's tokenizer "
                        "(mindclip.get_tokenizer(model))")
    if max_length is not None and shape[1] > max_length:
        raise ValueError(f"{what}: {shape[1]} tokens per text, this model takes at most {max_length} "
                         "(its context length); the model's tokenizer pads and truncates to it")
    values = _values(ids)
    if values.size and (values.min() < 0 or (vocab_size is not None and values.max() >= vocab_size)):
        bad = int(values.min()) if values.min() < 0 else int(values.max())
        raise ValueError(f"{what}: id {bad} is outside this model's vocabulary [0, {vocab_size}); "
                         "tokenize with the model's tokenizer (mindclip.get_tokenizer(model))")


def check_same_shape(a: Any, b: Any, what_a: str, what_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{what_b}: expected the shape of {what_a} {tuple(a.shape)}, got {tuple(b.shape)}")
