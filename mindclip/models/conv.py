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
# part of the cache key: choices measured against an earlier matmul path are measured again
MATMUL_PATH_VERSION = "gather-im2col"


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
        # taps of the matmul path at the input size it is built for (other sizes: native)
        index, self.out_size = patch_index(max(input_size, 1), kernel, stride, pad)
        self.patch_index = ms.Tensor(index)

    @property
    def shape_key(self) -> ConvShape:
        return (self.cin, self.cout, self.k, self.s, self.input_size)

    def construct(self, x):
        if self.path == "matmul" and x.shape[2] == self.input_size and x.shape[3] == self.input_size:
            return self.im2col_matmul(x)
        return super().construct(x)

    def im2col_matmul(self, x):
        """The convolution as one matmul over the ``k*k`` shifted views of the input, which
        are gathered in one op (channels last, a zero row standing for the padding): CPU
        kernels for strided slices and padding can be as slow as the convolution itself
        (0.5 GFLOP/s-equivalent on an AVX-512 Xeon), while a gather copies rows at memory
        speed."""
        b, c = x.shape[0], x.shape[1]
        rows = x.transpose(0, 2, 3, 1).reshape(b, -1, c)
        rows = ops.concat((rows, ops.zeros((b, 1, c), rows.dtype)), 1)
        oh = ow = self.out_size
        cols = ops.gather(rows, self.patch_index, 1).reshape(b * oh * ow, self.k * self.k * c)
        weight = self.weight.transpose(0, 2, 3, 1).reshape(self.cout, -1).astype(cols.dtype)
        y = _matmul_nt(cols, weight)
        return y.reshape(b, oh, ow, self.cout).transpose(0, 3, 1, 2)


def patch_index(size: int, k: int, s: int, p: int) -> Tuple[np.ndarray, int]:
    """For a ``size`` x ``size`` input flattened to rows (``y * size + x``, one extra zero row
    at ``size * size``): the row of every (output y, output x, kernel i, kernel j) tap, the
    padding taps pointing at the zero row, and the output size."""
    out = (size + 2 * p - k) // s + 1
    oy = np.arange(out)[:, None, None, None] * s + np.arange(k)[None, None, :, None] - p
    ox = np.arange(out)[None, :, None, None] * s + np.arange(k)[None, None, None, :] - p
    oy, ox = np.broadcast_arrays(oy, ox)
    index = oy * size + ox
    index[(oy < 0) | (oy >= size) | (ox < 0) | (ox >= size)] = size * size
    return index.reshape(-1).astype(np.int32), out


def _forced() -> str:
    value = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if value not in ("auto", "native", "matmul"):
        raise ValueError(f"{ENV_SWITCH}={value!r}: valid are auto, native, matmul")
    return value


def _cache_file() -> Path:
    from .cpu_kernels import _cpu_flags

    key = hashlib.sha256((ms.__version__ + MATMUL_PATH_VERSION + _cpu_flags()).encode()).hexdigest()[:16]
    return Path(store_root()) / "kernels" / f"conv_paths-{key}.json"


def _seconds(fn, x, repeats: int = 3, enough: float = float("inf")) -> float:
    """Mean seconds per call after a warm-up call (compilation), stopping early once a call
    takes more than ``enough`` (a path already known to lose)."""
    fn(x).asnumpy()
    total = 0.0
    for done in range(1, repeats + 1):
        start = time.perf_counter()
        fn(x).asnumpy()
        total += time.perf_counter() - start
        if total / done > enough:
            break
    return total / done


def measure(shape: ConvShape, batch: int = 2) -> str:
    """``native`` or ``matmul``: the faster path for ``shape`` on this processor."""
    cin, cout, k, s, size = shape
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, cin, size, size)).astype(np.float32))
    seconds = {}
    for path in ("matmul", "native"):
        # one cell per path: a compiled method is cached by its function and cell, so
        # switching ``path`` on one cell would time the first graph twice
        conv = Conv2d(cin, cout, k, s, size)
        conv.path = path
        # where the native kernel is the slow one, one call of it settles the choice
        seconds[path] = _seconds(ms.jit(conv.construct), x,
                                 enough=2 * seconds.get("matmul", float("inf")))
    return min(seconds, key=seconds.get)


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
