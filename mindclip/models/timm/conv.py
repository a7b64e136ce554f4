"""The convolutional pieces of timm's conv and hybrid trunks (ConvNeXt, ViTamin's MBConv
stages), on channels-last maps ``(B, H, W, C)`` from the stem to the head: LayerNorms and
MLPs act on the last axis as timm's channels-last blocks do, and no NCHW <-> NHWC transposes
(slow on MindSpore's CPU backend) run between layers. Parameters keep PyTorch's shapes and
names (``weight`` ``(out, in, k, k)``, ``bias``), so checkpoints convert by name.

- :class:`ChannelNorm`: timm's ``LayerNorm`` / ``LayerNorm2d``;
- :class:`DepthwiseConv`: a depthwise k x k convolution, one fused CPU kernel each way;
- :class:`BatchNorm`: PyTorch's ``BatchNorm2d`` (MobileOne's branches);
- :class:`Conv`: any other convolution: 1x1 as one matmul, k x k as im2col (a gather of
  the taps) + matmul, a few images at a time so that the columns of a large map stay small;
- :class:`AvgPool3x3`: ``AvgPool2d(3, 2, 1, count_include_pad=False)``;
- :class:`ClassifierHead`, :class:`ConvTrunk`: what the trunks with a map at the end
  (ConvNeXt, FastViT, Swin) share.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .. import cpu_kernels
from ..conv import patch_index
from ..layers import _FusedLayerNorm
from .layers import STD, linear, trunc_normal_param

_matmul_nt = ops.MatMul(transpose_b=True)
_COLUMN_BYTES = 64 << 20  # the im2col columns one step of a k x k convolution holds


class ChannelNorm(nn.Cell):
    """timm's ``LayerNorm`` / ``LayerNorm2d`` of its convolutional trunks: a LayerNorm over the
    channels of a channels-last map (the last axis of any tensor), under PyTorch's parameter
    names (``weight``, ``bias``: these trunks' norms have no telling module names), fp32, one
    fused kernel each way on CPU."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(width, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(width, np.float32)), name="bias")
        self.kernel = _FusedLayerNorm(eps)
        self.fused = self.kernel.available
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        orig = x.dtype
        x = x.astype(ms.float32)
        y = self.kernel(x, self.weight, self.bias) if self.fused else self.norm(x, self.weight, self.bias)[0]
        return y.astype(orig)


class _FusedDepthwise(nn.Cell):
    # the CPU kernels of DepthwiseConv; the backward gives the input's and the taps' gradients

    def __init__(self):
        super().__init__()
        self.forward = cpu_kernels.custom_op("DepthwiseForward")
        self.backward = cpu_kernels.custom_op("DepthwiseBackward", like=(0, 1, 2))
        self.available = self.forward is not None

    def construct(self, x, taps, bias):
        return self.forward(x, taps, bias)

    def bprop(self, x, taps, bias, out, dout):
        return self.backward(x, taps, bias, dout)


class DepthwiseConv(nn.Cell):
    """timm's depthwise convolutions (``groups`` = input channels: ``conv_dw``, MobileOne's and
    RepMixer's ``group_size=1``): ``kernel`` x ``kernel``, zero padding ``kernel // 2``,
    ``stride`` 1 or 2, ``multiplier`` outputs per input channel, a bias or none, on
    channels-last maps ``(B, H, W, C)`` of ``input_size`` pixels a side (for stride 2); the
    weight ``(C * multiplier, 1, k, k)`` as PyTorch's. On CPU one fused pass each way over
    the channels-last map, the bias added in it (MindSpore's broadcast add over a map costs
    twice the convolution); elsewhere MindSpore's grouped ``Conv2D`` between transposes.
    Stride 2 keeps every other row and column of the stride-1 sums (the same windows)."""

    def __init__(self, channels: int, kernel: int, has_bias: bool = True, stride: int = 1,
                 input_size: int = 0, multiplier: int = 1):
        super().__init__()
        out = channels * multiplier
        self.channels, self.kernel_size = out, kernel
        self.weight = trunc_normal_param((out, 1, kernel, kernel), STD, "weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(Tensor(np.zeros(out, np.float32)), name="bias")
        else:
            self.zero_bias = Tensor(np.zeros(out, np.float32))
        self.kernel = _FusedDepthwise()
        self.fused = self.kernel.available
        self.conv = ops.Conv2D(out_channel=out, kernel_size=kernel, pad_mode="pad",
                               pad=kernel // 2, group=out)
        # output channel o reads input channel o // multiplier
        self.multiplier = multiplier
        self.repeat = Tensor(np.arange(out) // multiplier, ms.int32)
        self.every_other = EveryOther(input_size) if stride == 2 else nn.Identity()

    def construct(self, x):
        if self.multiplier > 1:
            x = ops.gather(x, self.repeat, 3)
        bias = self.bias if self.has_bias else self.zero_bias
        if self.fused and x.dtype == ms.float32:
            y = self.kernel(x, self.weight.reshape(self.channels, -1).transpose(1, 0), bias)
        else:
            y = self.conv(x.transpose(0, 3, 1, 2), self.weight.astype(x.dtype)).transpose(0, 2, 3, 1)
            y = y + bias.astype(y.dtype)
        return self.every_other(y)


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
           has_bias: bool = True, input_size: int = 0) -> nn.Cell:
    """timm's ``create_conv2d`` on channels-last maps: dense (``groups`` 1) or depthwise
    (``groups`` = ``cin``, ``cout`` a multiple of it); padding ``kernel // 2``."""
    if groups == 1:
        return Conv(cin, cout, kernel, stride, input_size, has_bias)
    if groups != cin or cout % cin:
        raise ValueError(f"grouped convolution {cin}->{cout} in {groups} groups: only dense and "
                         "depthwise ones are implemented")
    return DepthwiseConv(cin, kernel, has_bias, stride, input_size, cout // cin)


class BatchNorm(nn.Cell):
    """PyTorch's ``BatchNorm2d`` on channels-last maps (the last axis of any tensor) under its
    names (``weight``, ``bias``, ``running_mean``, ``running_var``): in training it normalises
    by the batch's statistics and moves the running ones by ``momentum`` (PyTorch's 0.1), in
    inference by the running ones. Inference on a CPU map is one fused pass, ``x * scale +
    shift`` (the depthwise kernel with 1x1 taps; gradients reach ``weight`` and ``bias``
    through ``scale`` and ``shift``): MindSpore's CPU BatchNorm over a map is ~18x slower."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(channels, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(channels, np.float32)), name="bias")
        self.running_mean = Parameter(Tensor(np.zeros(channels, np.float32)), name="running_mean",
                                      requires_grad=False)
        self.running_var = Parameter(Tensor(np.ones(channels, np.float32)), name="running_var",
                                     requires_grad=False)
        self.eps = eps
        self.train_norm = ops.BatchNorm(is_training=True, epsilon=eps, momentum=momentum)
        self.eval_norm = ops.BatchNorm(is_training=False, epsilon=eps)
        self.kernel = _FusedDepthwise()
        self.fused = self.kernel.available

    def construct(self, x):
        if not self.training and self.fused and x.dtype == ms.float32 and x.ndim == 4:
            scale = self.weight / ops.sqrt(self.running_var + self.eps)
            shift = self.bias - self.running_mean * scale
            return self.kernel(x, scale.reshape(1, -1), shift)
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).astype(ms.float32)
        norm = self.train_norm if self.training else self.eval_norm
        y = norm(rows, self.weight, self.bias, self.running_mean, self.running_var)[0]
        return y.reshape(shape).astype(x.dtype)


class EveryOther(nn.Cell):
    """Rows and columns 0, 2, 4, ... of a channels-last map of ``input_size`` pixels a side:
    a stride-2 convolution's outputs from its stride-1 sums (with padding ``k // 2``, the same
    windows). Gathers, not a strided slice: MindSpore's CPU StridedSliceGrad fails on it."""

    def __init__(self, input_size: int):
        super().__init__()
        self.index = Tensor(np.arange(0, input_size, 2).astype(np.int32))

    def construct(self, x):
        return ops.gather(ops.gather(x, self.index, 1), self.index, 2)


class Conv(nn.Cell):
    """timm's ``nn.Conv2d`` / ``create_conv2d`` (``kernel`` x ``kernel``, ``stride``, zero
    padding ``kernel // 2``, a bias) on channels-last maps of ``input_size`` pixels a side.
    1x1: one matmul over the pixels. Larger: the taps gathered into columns (a zero row
    standing for the padding; a gather copies at memory speed where MindSpore's strided
    slices and its CPU Conv2D do not), as many images at a time as keep the columns within
    64 MB, and multiplied by the weight laid out (out, kh, kw, in).
    ``on_image``: the input is the image ``(B, C, H, W)`` (the stem's first convolution)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, input_size: int = 0,
                 has_bias: bool = True, on_image: bool = False):
        super().__init__()
        self.cin, self.cout, self.kernel, self.on_image = cin, cout, kernel, on_image
        fan_out = kernel * kernel * cout  # timm's _init_conv (ViTamin) / close to ConvNeXt's
        self.weight = Parameter(initializer(Normal((2.0 / fan_out) ** 0.5), (cout, cin, kernel, kernel),
                                            ms.float32), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(Tensor(np.zeros(cout, np.float32)), name="bias")
        self.pointwise = kernel == 1 and stride == 1
        if not self.pointwise:
            index, self.out_size = patch_index(input_size, kernel, stride, kernel // 2)
            self.index = Tensor(index)
        self.bias_add = ops.BiasAdd()

    def construct(self, x):
        if self.on_image:
            x = x.transpose(0, 2, 3, 1)
        b, h, w, c = x.shape
        if self.pointwise:
            y = _matmul_nt(x.reshape(-1, c), self.weight.reshape(self.cout, c).astype(x.dtype))
            oh, ow = h, w
        else:
            weight = self.weight.transpose(0, 2, 3, 1).reshape(self.cout, -1).astype(x.dtype)
            taps = self.kernel * self.kernel * c
            # as many images at a time as keep their columns within _COLUMN_BYTES
            chunk = max(1, _COLUMN_BYTES // (self.out_size * self.out_size * taps * 4))
            outs = []
            for i in range(0, b, chunk):
                n = min(chunk, b - i)
                rows = ops.concat((x[i:i + n].reshape(n, h * w, c), ops.zeros((n, 1, c), x.dtype)), 1)
                cols = ops.gather(rows, self.index, 1).reshape(-1, taps)
                outs.append(_matmul_nt(cols, weight))
            y = ops.concat(outs, 0) if len(outs) > 1 else outs[0]
            oh = ow = self.out_size
        if self.has_bias:
            y = self.bias_add(y, self.bias.astype(y.dtype))
        return y.reshape(b, oh, ow, self.cout)


class AvgPool3x3(nn.Cell):
    """timm's ``nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`` on channels-last
    maps of ``input_size`` pixels a side (even): each 3x3 window's sum (the depthwise kernel
    with unit taps, stride 1, every other row and column kept) over its pixels inside the map."""

    def __init__(self, channels: int, input_size: int):
        super().__init__()
        self.taps = Tensor(np.ones((9, channels), np.float32))
        self.ones = Tensor(np.ones((channels, 1, 3, 3), np.float32))
        self.zero_bias = Tensor(np.zeros(channels, np.float32))
        self.kernel = _FusedDepthwise()
        self.fused = self.kernel.available
        self.conv = ops.Conv2D(out_channel=channels, kernel_size=3, pad_mode="pad", pad=1, group=channels)
        self.every_other = EveryOther(input_size)
        out = (input_size + 1) // 2
        inside = np.minimum(np.arange(out) * 2 + 1, input_size - 1) - np.maximum(np.arange(out) * 2 - 1, 0) + 1
        self.count = Tensor((inside[:, None] * inside[None, :]).reshape(1, out, out, 1).astype(np.float32))

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            sums = self.kernel(x, self.taps, self.zero_bias)
        else:
            sums = self.conv(x.transpose(0, 3, 1, 2), self.ones.astype(x.dtype)).transpose(0, 2, 3, 1)
        return self.every_other(sums) / self.count.astype(x.dtype)


class ClassifierHead(nn.Cell):
    """timm's ``ClassifierHead``: the average over the map, then ``fc`` (a Linear when
    ``num_classes`` > 0)."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.fc = linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def construct(self, x):
        return self.fc(x.mean(axis=(1, 2)))


class ConvTrunk(nn.Cell):
    """What timm's trunks with a map at the end share around their layers (the convolutional
    ones, and Swin's windowed transformer): average pooling only (timm's
    ``global_pool='avg'``), no patch dropout, and the last map as the tokens.
    Subclasses set ``family`` (timm's class name, for messages) and define
    ``forward_features`` (image -> last channels-last map) and ``head``."""

    family = ""

    def __init__(self, arch, global_pool: str, pool, patch_dropout: float):
        super().__init__()
        if global_pool != "avg" or (pool or "avg") != "avg":
            raise ValueError(f"timm's {self.family} pools by the average (global_pool 'avg'), not "
                             f"{pool or global_pool!r}")
        self.arch = arch
        self.set_patch_dropout(patch_dropout)

    def forward_tokens(self, x):
        """``(pooled features, the last map as tokens (B, H*W, C))``."""
        x = self.forward_features(x)
        b, h, w, c = x.shape
        return self.head(x), x.reshape(b, h * w, c)

    def construct(self, x):
        return self.head(self.forward_features(x))

    def set_patch_dropout(self, prob: float) -> None:
        if prob:
            raise ValueError(f"timm's {self.family} has no patch dropout; set patch_dropout to 0")

