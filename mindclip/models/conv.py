"""Convolutions that are fast on every CPU.

MindSpore 2.10's CPU ``Conv2d`` kernel depends on the processor: on AVX2-only EPYCs its 3x3
convolutions run near matmul speed, on a Zen 5 EPYC with AVX-512 at 0.4-0.7 GFLOP/s (50x
slower than PyTorch there), while its matmul is fast on both. :class:`Conv2d` is ``nn.Conv2d``
(same parameters and names, every checkpoint loads) that can also run as im2col + one matmul.
Which one runs is decided on the machine at hand, per convolution shape, by timing both once
(as cuDNN's benchmark mode does) when a model is built on CPU; the choice is cached per
processor in ``$MINDCLIP_HOME/kernels/``. ``MINDCLIP_CPU_CONV=native|matmul`` forces one;
Ascend/GPU always keep MindSpore's kernel (and exported MindIR traces it, see
:func:`~mindclip.models.cpu_kernels.portable`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from .store import store_root

ENV_SWITCH = "MINDCLIP_CPU_CONV"  # auto (default) | native | matmul
_matmul_nt = ops.MatMul(transpose_b=True)
# (cin, cout, kernel, stride, input size): the shapes the choice is cached by
ConvShape = Tuple[int, int, int, int, int]


class Conv2d(nn.Conv2d):
    """A square, bias-free convolution (``pad = kernel // 2``) that runs MindSpore's kernel
    (``path = "native"``) or im2col + matmul (``path = "matmul"``); the two agree to float
    rounding. ``input_size`` (the spatial size it sees at the model's image size) keys the
    measured choice."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, input_size: int = 0):
        pad = kernel // 2
        super().__init__(cin, cout, kernel, stride=stride, padding=pad,
                         pad_mode="pad" if pad else "valid", has_bias=False)
        self.k, self.s, self.p, self.cin, self.cout = kernel, stride, pad, cin, cout
        self.input_size = input_size
        self.path = "native"

    @property
    def shape_key(self) -> ConvShape:
        return (self.cin, self.cout, self.k, self.s, self.input_size)

    def construct(self, x):
        if self.path == "matmul":
            return self.im2col_matmul(x)
        return super().construct(x)

    def im2col_matmul(self, x):
        """The convolution as one matmul over the ``k*k`` shifted views of the input."""
        b, c, h, w = x.shape
        k, s, p = self.k, self.s, self.p
        if p:
            x = ops.pad(x, (p, p, p, p))
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        views = []
        for i in range(k):  # GRAPH mode parses one comprehension per list
            for j in range(k):
                views.append(x[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s])
        cols = ops.stack(views, axis=2).reshape(b, c * k * k, oh * ow)  # weight's (c, i, j) order
        cols = cols.transpose(0, 2, 1).reshape(b * oh * ow, c * k * k)
        y = _matmul_nt(cols, self.weight.reshape(self.cout, c * k * k).astype(cols.dtype))
        return y.reshape(b, oh * ow, self.cout).transpose(0, 2, 1).reshape(b, self.cout, oh, ow)


def _forced() -> str:
    value = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if value not in ("auto", "native", "matmul"):
        raise ValueError(f"{ENV_SWITCH}={value!r}: valid are auto, native, matmul")
    return value


def _cache_file() -> Path:
    from .cpu_kernels import _cpu_flags

    key = hashlib.sha256((ms.__version__ + _cpu_flags()).encode()).hexdigest()[:16]
    return Path(store_root()) / "kernels" / f"conv_paths-{key}.json"


def _seconds(fn, x, repeats: int = 3) -> float:
    fn(x).asnumpy()  # compile and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x).asnumpy()
    return (time.perf_counter() - start) / repeats


def measure(shape: ConvShape, batch: int = 2) -> str:
    """``native`` or ``matmul``: the faster path for ``shape`` on this processor."""
    cin, cout, k, s, size = shape
    conv = Conv2d(cin, cout, k, s, size)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, cin, size, size)).astype(np.float32))
    native = _seconds(ms.jit(conv.construct), x)
    conv.path = "matmul"
    matmul = _seconds(ms.jit(conv.construct), x)
    return "matmul" if matmul < native else "native"


@functools.lru_cache(maxsize=None)
def _cached_choices(path: str) -> Dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def choose_paths(model: nn.Cell) -> None:
    """Set every :class:`Conv2d` of ``model`` to the path measured fastest for its shape on
    this processor (CPU only; 1x1 convolutions keep MindSpore's kernel, fast everywhere)."""
    convs = [c for _, c in model.cells_and_names() if isinstance(c, Conv2d)]
    if ms.get_context("device_target") != "CPU":
        return
    forced = _forced()
    cache = _cache_file()
    choices = dict(_cached_choices(str(cache)))
    added = False
    for conv in convs:
        if conv.k == 1:
            continue
        if forced != "auto":
            conv.path = forced
            continue
        key = ",".join(map(str, conv.shape_key))
        if key not in choices:
            choices[key] = measure(conv.shape_key)
            added = True
        conv.path = choices[key]
    if added:
        _cached_choices.cache_clear()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(choices, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only store: measure again next time
