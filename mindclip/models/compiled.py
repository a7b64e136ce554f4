"""The public calls of every model, checked and compiled: ``encode_image``, ``encode_text`` and
``model(...)`` check their inputs (:mod:`.inputs`), then run one compiled graph per model,
call, ``normalize`` and train flag (``ms.jit`` compiles once per input shape), in PyNative mode
(MindSpore's default, where notebooks and scripts start) as in GRAPH mode.

Why a compiled wrapper held by the model rather than ``ms.jit`` on the methods themselves: the
same methods are also traced inside other graphs (the train step, the objectives), where
Python-side checks cannot run; the graph-level forms stay plain methods (``image_features``,
``text_features``, ``construct``) and the wrappers call them. Each wrapper lives in a dict on
its model, so it goes when the model goes.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from .inputs import check_images


class _CompiledCall(nn.Cell):
    """``model.<method>(*inputs)`` as one graph, with ``normalize`` baked in for the feature
    calls (``None``: the method takes none)."""

    def __init__(self, model: nn.Cell, method: str, normalize: Optional[bool]):
        super().__init__(auto_prefix=False)
        self.model = model
        self.method = method
        self.normalize = normalize

    @ms.jit
    def construct(self, *inputs):
        call = getattr(self.model, self.method)
        if self.normalize is None:
            return call(*inputs)
        return call(*inputs, normalize=self.normalize)


# The public kinds: (model method, whether it takes ``normalize``). image_tokens,
# decode_context and decode_step are what generation calls (CoCa): the image tokens and the
# decoder's keys/values of them once per generation, then one step on a fixed-length token
# buffer per token (the position a (1,) int32 tensor, so every step runs the same graph).
_KINDS = {"image": ("image_features", True), "text": ("text_features", True),
          "forward": ("construct", False), "image_tokens": ("image_tokens", False),
          "decode_context": ("decode_context", False), "decode_step": ("decode_logits", False)}


def compiled(model: nn.Cell, kind: str, normalize: bool = False) -> Callable[..., Any]:
    """The compiled ``kind`` call (``image``, ``text``, ``forward``; for models that write
    text ``image_tokens``, ``decode_context`` and ``decode_step``) of ``model`` for its
    current train flag (baked into the graph)."""
    method, takes_normalize = _KINDS[kind]
    cache = model.__dict__.setdefault("_compiled_calls", {})
    key = (kind, bool(normalize) if takes_normalize else None, bool(model.training))
    if key not in cache:
        wrapper = _CompiledCall(model, method, key[1])
        wrapper.set_train(key[2])
        cache[key] = wrapper
    return cache[key]


def as_tensor(x: Any, ids: bool = False) -> Any:
    """numpy arrays become Tensors; ``ids`` (token ids, masks) as int32, the embedding index
    type, when they are integers."""
    if isinstance(x, np.ndarray):
        if ids and np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.int32)
        return ms.Tensor(x)
    return x


class PublicCallsMixin:
    """``encode_image(images, normalize=...)``, ``encode_text(*text, normalize=...)`` and
    ``model(images, *text)``, checked and compiled, for every family's model class, which
    provides ``image_features``/``text_features`` (graph-level, what other graphs call),
    ``construct``, ``image_size`` and ``check_text(*text)``.

    ``normalize`` defaults to what open_clip's class of the same model does
    (``normalize_by_default``: False for CLIP, True for CoCa), so that code ported from
    open_clip keeps its meaning."""

    normalize_by_default = False

    def encode_image(self, images: Any, normalize: Optional[bool] = None) -> ms.Tensor:
        """Image features ``(B, embed_dim)`` of a float batch ``(B, 3, S, S)``; unit length
        when ``normalize`` (default: ``normalize_by_default``, open_clip's)."""
        images = as_tensor(images)
        check_images(images, self.image_size)
        return compiled(self, "image", self._normalize(normalize))(images)

    def encode_text(self, *text: Any, normalize: Optional[bool] = None) -> ms.Tensor:
        """Text features ``(B, embed_dim)`` of what the model's tokenizer returns; unit length
        when ``normalize`` (default: ``normalize_by_default``, open_clip's)."""
        text = tuple(as_tensor(t, ids=True) for t in text)
        self.check_text(*text)
        return compiled(self, "text", self._normalize(normalize))(*text)

    def _normalize(self, normalize: Optional[bool]) -> bool:
        return self.normalize_by_default if normalize is None else bool(normalize)

    def __call__(self, *inputs: Any, **kwargs: Any) -> Tuple[ms.Tensor, ...]:
        if kwargs or not inputs:  # MindSpore's own keyword calls: not the public form
            return super().__call__(*inputs, **kwargs)
        inputs = (as_tensor(inputs[0]),) + tuple(as_tensor(x, ids=True) for x in inputs[1:])
        check_images(inputs[0], self.image_size)
        self.check_text(*inputs[1:])
        return compiled(self, "forward")(*inputs)
