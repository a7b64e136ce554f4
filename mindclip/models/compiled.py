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

from typing import Any, Callable, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from .inputs import check_images


class _ImageFeatures(nn.Cell):
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model
        self.normalize = normalize

    @ms.jit
    def construct(self, images):
        return self.model.image_features(images, self.normalize)


class _TextFeatures(nn.Cell):
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model
        self.normalize = normalize

    @ms.jit
    def construct(self, *text):
        return self.model.text_features(*text, normalize=self.normalize)


class _Forward(nn.Cell):
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, *inputs):
        return self.model.construct(*inputs)


class _ImageTokens(nn.Cell):
    # the image tokens a text decoder attends to (CoCa), computed once per generation
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, images):
        return self.model.image_tokens(images)


class _DecodeContext(nn.Cell):
    # the decoder's keys/values of the image tokens, once per generation
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, image_tokens):
        return self.model.decode_context(image_tokens)


class _DecodeStep(nn.Cell):
    # one decoding step on a fixed-length token buffer: the logits at ``position`` (a (1,)
    # int32 tensor, so every step of a generation runs the same graph)
    def __init__(self, model: nn.Cell, normalize: bool):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, context, tokens, position):
        return self.model.decode_logits(context, tokens, position)


_KINDS = {"image": _ImageFeatures, "text": _TextFeatures, "forward": _Forward,
          "image_tokens": _ImageTokens, "decode_context": _DecodeContext,
          "decode_step": _DecodeStep}


def compiled(model: nn.Cell, kind: str, normalize: bool = False) -> Callable[..., Any]:
    """The compiled ``kind`` call (``image``, ``text``, ``forward``; for models that write
    text ``image_tokens``, ``decode_context`` and ``decode_step``) of ``model`` for its current train flag (baked
    into the graph)."""
    cache = model.__dict__.setdefault("_compiled_calls", {})
    key = (kind, bool(normalize), bool(model.training))
    if key not in cache:
        wrapper = _KINDS[kind](model, bool(normalize))
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
    """``encode_image(images, normalize=False)``, ``encode_text(*text, normalize=False)`` and
    ``model(images, *text)``, checked and compiled, for every family's model class, which
    provides ``image_features``/``text_features`` (graph-level, what other graphs call),
    ``construct``, ``image_size`` and ``check_text(*text)``."""

    def encode_image(self, images: Any, normalize: bool = False) -> ms.Tensor:
        """Image features ``(B, embed_dim)`` of a float batch ``(B, 3, S, S)``; unit length
        when ``normalize``."""
        images = as_tensor(images)
        check_images(images, self.image_size)
        return compiled(self, "image", normalize)(images)

    def encode_text(self, *text: Any, normalize: bool = False) -> ms.Tensor:
        """Text features ``(B, embed_dim)`` of what the model's tokenizer returns; unit length
        when ``normalize``."""
        text = tuple(as_tensor(t, ids=True) for t in text)
        self.check_text(*text)
        return compiled(self, "text", normalize)(*text)

    def __call__(self, *inputs: Any, **kwargs: Any) -> Tuple[ms.Tensor, ...]:
        if kwargs or not inputs:  # MindSpore's own keyword calls: not the public form
            return super().__call__(*inputs, **kwargs)
        inputs = (as_tensor(inputs[0]),) + tuple(as_tensor(x, ids=True) for x in inputs[1:])
        check_images(inputs[0], self.image_size)
        self.check_text(*inputs[1:])
        return compiled(self, "forward")(*inputs)
