"""Batch encoding with a fixed batch shape through compiled encoders, so each tower
compiles once and runs as a graph in GRAPH and PyNative mode alike."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn

from ..families.base import split_text_inputs


class _ImageEncoder(nn.Cell):
    def __init__(self, model: nn.Cell):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, images):
        return self.model.encode_image(images)


class _TextEncoder(nn.Cell):
    def __init__(self, model: nn.Cell):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, *inputs):
        return self.model.encode_text(*inputs)


# PyNative is MindSpore's default mode, so pipelines and a Trainer built in Python run in it
# unless the caller sets GRAPH mode; dispatched op by op, ViT-B/32 encodes images at half
# the graph's speed. One compiled wrapper per model and train flag (the flag is baked into
# the graph), dropped with the model.
_ENCODERS: "weakref.WeakKeyDictionary[nn.Cell, Dict[Tuple[type, bool], nn.Cell]]" = \
    weakref.WeakKeyDictionary()


def _compiled(model: Any, kind: type) -> Any:
    if not isinstance(model, nn.Cell):
        return getattr(model, "encode_image" if kind is _ImageEncoder else "encode_text")
    per_model = _ENCODERS.setdefault(model, {})
    key = (kind, bool(model.training))
    if key not in per_model:
        per_model[key] = kind(model)
        per_model[key].set_train(key[1])
    return per_model[key]


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    if len(batch) == size:
        return batch
    reps = np.repeat(batch[-1:], size - len(batch), axis=0)
    return np.concatenate([batch, reps], axis=0)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def encode_image_batch(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """L2-normalised features of ``images`` (N, 3, H, W), run in padded batches."""
    encode = _compiled(model, _ImageEncoder)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        feats = encode(ms.Tensor(_pad(chunk.astype(np.float32), batch_size)))
        out.append(feats.asnumpy()[:len(chunk)])
    return _normalize(np.concatenate(out).astype(np.float32)) if out else np.zeros((0, 0), np.float32)


def encode_texts(model: Any, tokenizer: Callable, texts: Sequence[str],
                 batch_size: int = 64) -> np.ndarray:
    """L2-normalised features of ``texts`` through the model family's text processor."""
    encode = _compiled(model, _TextEncoder)
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        inputs = split_text_inputs(tokenizer(chunk))
        feats = encode(*(ms.Tensor(_pad(np.asarray(x), batch_size)) for x in inputs))
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
