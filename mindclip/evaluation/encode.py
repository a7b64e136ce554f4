"""Batch encoding with a fixed batch shape through the models' public calls (checked and
compiled once per input shape, :mod:`mindclip.models.compiled`), so each tower compiles once
and runs as a graph in GRAPH and PyNative mode alike."""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Sequence, Tuple

import mindspore as ms
import numpy as np

from ..families.base import split_text_inputs


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    if len(batch) == size:
        return batch
    reps = np.repeat(batch[-1:], size - len(batch), axis=0)
    return np.concatenate([batch, reps], axis=0)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def encode_image_batch(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """L2-normalised features of ``images`` (N, 3, H, W), run in padded batches."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].astype(np.float32, copy=False)
        # The Tensor shares the array's memory (one copy of the batch, not three); nothing
        # writes to it before asnumpy() has waited for the result.
        padded = np.ascontiguousarray(_pad(chunk, batch_size))
        feats = model.encode_image(ms.Tensor.from_numpy(padded), normalize=False)
        out.append(feats.asnumpy()[:len(chunk)])
    return _normalize(np.concatenate(out).astype(np.float32)) if out else np.zeros((0, 0), np.float32)


def encode_texts(model: Any, tokenizer: Callable, texts: Sequence[str],
                 batch_size: int = 64) -> np.ndarray:
    """L2-normalised features of ``texts`` through the model family's text processor."""
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        inputs = split_text_inputs(tokenizer(chunk))
        feats = model.encode_text(*(_pad(np.asarray(x), batch_size) for x in inputs), normalize=False)
        out.append(feats.asnumpy()[:len(chunk)])
    return _normalize(np.concatenate(out).astype(np.float32))


def encode_loader(model: Any, loader: Iterable[Tuple[np.ndarray, np.ndarray]],
                  batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Features of every image a loader yields, with its second column (labels/indices)."""
    feats: List[np.ndarray] = []
    seconds: List[np.ndarray] = []
    for images, second in loader:
        feats.append(encode_image_batch(model, images, batch_size))
        seconds.append(np.asarray(second))
    if not feats:
        raise ValueError("the evaluation dataset yielded no readable image")
    return np.concatenate(feats), np.concatenate(seconds)
