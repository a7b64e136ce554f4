"""timm's ``FastVit`` (``fastvit.py``) for the names open_clip's configs use: Apple's MCi
image encoders of MobileCLIP (``fastvit_mci0`` ... ``fastvit_mci2``) and MobileCLIP2
(``fastvit_mci3``, ``fastvit_mci4``: five stages, LayerNorm in the attention blocks).

A convolutional stem of MobileOne blocks, stages of RepMixer blocks (depthwise token mixing)
and, last, attention blocks after a conditional position encoding, each stage entered through
a large-kernel depthwise downsampling; then ``final_conv`` (a MobileOne block with
squeeze-excite doubling the width) and average pooling. Every MobileOne-style piece runs in its
training form, as parallel branches (a k x k and a 1x1 convolution, a BatchNorm identity),
each followed by BatchNorm; :func:`~mindclip.models.reparam.reparameterize_model` fuses them, as timm's does, into
single convolutions (``reparam_conv``) for inference and export. Parameter names are timm's.
Maps stay channels last from the stem to the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn

from ..checkpointing import Blocks
from ..layers import ScaleChannels, make_activation
from ..reparam import Reparameterizable
from .conv import BatchNorm, ChannelNorm, ClassifierHead, Conv, ConvTrunk, conv2d
from ..rng import drop_path_or_identity
from .layers import Attention, stage_drop_path_rates
from .registry import TimmArch, register_timm_model


@dataclass(frozen=True, kw_only=True)
class FastVitArch(TimmArch):
    """timm ``FastVit`` ``model_args``: blocks per stage (``layers``), widths
    (``embed_dims``), ``mlp_ratios``, ``downsamples`` (stage 0's is False), ``se_downsamples``,
    ``token_mixers`` (``repmixer`` / ``attention``), which stages have a conditional position
    encoding (``pos_embs``), ``attn_norm`` (the attention blocks' norm: ``batchnorm`` or
    ``layernorm``, MCi3/4), ``stem_use_scale_branch``. Fully convolutional."""

    layers: Tuple[int, ...]
    embed_dims: Tuple[int, ...]
    mlp_ratios: Tuple[float, ...]
    downsamples: Tuple[bool, ...]
    se_downsamples: Tuple[bool, ...]
    token_mixers: Tuple[str, ...]
    pos_embs: Tuple[bool, ...]
    attn_norm: str = "batchnorm"
    stem_use_scale_branch: bool = True
    layer_scale_init_value: float = 1e-5
    cls_ratio: float = 2.0

    ANY_IMAGE_SIZE: ClassVar[bool] = True

    @property
    def num_features(self) -> int:
        return int(self.embed_dims[-1] * self.cls_ratio)

    def trunk_class(self):
        return FastVit


def _fuse(conv_weight: np.ndarray, bn) -> Tuple[np.ndarray, np.ndarray]:
    """A convolution's weight and the BatchNorm after it as one convolution's (kernel, bias)."""
    std = np.sqrt(bn.running_var.asnumpy() + bn.eps)
    scale = bn.weight.asnumpy() / std
    return (conv_weight * scale.reshape(-1, 1, 1, 1),
            bn.bias.asnumpy() - bn.running_mean.asnumpy() * scale)


def _identity_kernel(channels: int, in_per_group: int, kernel: int) -> np.ndarray:
    """timm's ``id_tensor``: the convolution that returns its input."""
    value = np.zeros((channels, in_per_group, kernel, kernel), np.float32)
    value[np.arange(channels), np.arange(channels) % in_per_group, kernel // 2, kernel // 2] = 1.0
    return value


def _pad_kernel(weight: np.ndarray, kernel: int) -> np.ndarray:
    pad = (kernel - weight.shape[-1]) // 2
    return np.pad(weight, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


class ConvNormAct(Reparameterizable):
    """timm's ``ConvNormAct`` with ``apply_act=False``: ``conv`` (no bias) then ``bn``. Fused
    (beyond timm's fusion: ConvMlp's, which timm leaves) into one convolution with a bias: a
    BatchNorm over a map costs MindSpore's CPU backend several times the depthwise
    convolution before it."""

    branch_names = ("conv", "bn")

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, input_size: int):
        super().__init__()
        self.shape = (cin, cout, kernel, stride, groups, input_size)
        self.conv = conv2d(cin, cout, kernel, stride, groups, False, input_size)
        self.bn = BatchNorm(cout)

    def construct(self, x):
        if self.reparameterized:
            return self.reparam_conv(x)
        return self.bn(self.conv(x))

    def folded(self) -> Tuple[np.ndarray, np.ndarray]:
        """The convolution with its BatchNorm folded in: ``(kernel, bias)``."""
        return _fuse(self.conv.weight.asnumpy(), self.bn)

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        return self.folded()

    def fused_conv(self) -> nn.Cell:
        cin, cout, kernel, stride, groups, size = self.shape
        return conv2d(cin, cout, kernel, stride, groups, True, size)


class SqueezeExcite(nn.Cell):
    """timm's ``SEModule``: ``x * sigmoid(fc2(relu(fc1(mean(x)))))``, the fcs 1x1 convolutions."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = Conv(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = Conv(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def construct(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean(axis=(1, 2), keep_dims=True)))))


def _make_divisible(v: float, divisor: int) -> int:
    # timm's make_divisible with round_limit 0 (SEModule's reduced width)
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def _se_or_identity(use_se: bool, channels: int, ratio: float, divisor: int) -> nn.Cell:
    return SqueezeExcite(channels, _make_divisible(channels * ratio, divisor)) if use_se else nn.Identity()


class MobileOneBlock(Reparameterizable):
    """timm's ``MobileOneBlock``: ``act(se(identity(x) + conv_scale(x) + sum(conv_kxk)))``, the
    identity a BatchNorm (same width, stride 1), ``conv_scale`` a 1x1 branch (k > 1)."""

    branch_names = ("identity", "conv_kxk", "conv_scale")

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, input_size: int,
                 use_se: bool = False, use_act: bool = True, use_scale_branch: bool = True,
                 num_conv_branches: int = 1):
        super().__init__()
        self.cin, self.cout, self.kernel_size, self.stride, self.groups = cin, cout, kernel, stride, groups
        self.input_size = input_size
        self.se = _se_or_identity(use_se, cout, 1 / 16, 1)
        self.has_identity = cout == cin and stride == 1
        if self.has_identity:
            self.identity = BatchNorm(cin)
        self.conv_kxk = nn.CellList([ConvNormAct(cin, cout, kernel, stride, groups, input_size)
                                     for _ in range(num_conv_branches)])
        self.has_scale = kernel > 1 and use_scale_branch
        if self.has_scale:
            self.conv_scale = ConvNormAct(cin, cout, 1, stride, groups, input_size)
        self.act = make_activation("gelu") if use_act else nn.Identity()

    def construct(self, x):
        if self.reparameterized:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.branches(x)
        return self.act(self.se(out))

    def branches(self, x):
        out = None
        if self.has_identity:
            out = self.identity(x)
        if self.has_scale:
            y = self.conv_scale(x)
            out = y if out is None else out + y
        for branch in self.conv_kxk:
            y = branch(x)
            out = y if out is None else out + y
        return out

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        in_per_group = self.cin // self.groups
        kernel = np.zeros((self.cout, in_per_group, self.kernel_size, self.kernel_size), np.float32)
        bias = np.zeros(self.cout, np.float32)
        if self.has_identity:
            k, b = _fuse(_identity_kernel(self.cin, in_per_group, self.kernel_size), self.identity)
            kernel, bias = kernel + k, bias + b
        if self.has_scale:
            k, b = self.conv_scale.folded()
            kernel, bias = kernel + _pad_kernel(k, self.kernel_size), bias + b
        for branch in self.conv_kxk:
            k, b = branch.folded()
            kernel, bias = kernel + k, bias + b
        return kernel, bias

    def fused_conv(self) -> nn.Cell:
        return conv2d(self.cin, self.cout, self.kernel_size, self.stride, self.groups, True, self.input_size)

    def fuses_inner(self) -> Tuple[nn.Cell, ...]:
        return tuple(self.conv_kxk) + ((self.conv_scale,) if self.has_scale else ())


class ReparamLargeKernelConv(Reparameterizable):
    """timm's ``ReparamLargeKernelConv``: ``act(se(large_conv(x) + small_conv(x)))``."""

    branch_names = ("large_conv", "small_conv")

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, small_kernel: int,
                 input_size: int, use_se: bool):
        super().__init__()
        self.cin, self.cout, self.kernel_size, self.stride, self.input_size = cin, cout, kernel, stride, input_size
        self.large_conv = ConvNormAct(cin, cout, kernel, stride, cin, input_size)
        self.small_conv = ConvNormAct(cin, cout, small_kernel, stride, cin, input_size)
        self.se = _se_or_identity(use_se, cout, 0.25, 8)
        self.act = make_activation("gelu")

    def construct(self, x):
        if self.reparameterized:
            out = self.reparam_conv(x)
        else:
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        k, b = self.large_conv.folded()
        small_k, small_b = self.small_conv.folded()
        return k + _pad_kernel(small_k, self.kernel_size), b + small_b

    def fused_conv(self) -> nn.Cell:
        return conv2d(self.cin, self.cout, self.kernel_size, self.stride, self.cin, True, self.input_size)

    def fuses_inner(self) -> Tuple[nn.Cell, ...]:
        return (self.large_conv, self.small_conv)


class PatchEmbed(nn.Cell):
    """timm's FastViT ``PatchEmbed``: ``proj`` = a 7x7/2 large-kernel depthwise convolution to
    the new width, then a 1x1 MobileOne block."""

    def __init__(self, cin: int, cout: int, input_size: int, use_se: bool):
        super().__init__()
        self.proj = nn.SequentialCell([
            ReparamLargeKernelConv(cin, cout, 7, 2, 3, input_size, use_se),
            MobileOneBlock(cout, cout, 1, 1, 1, input_size // 2)])

    def construct(self, x):
        return self.proj(x)


class LayerScale2d(nn.Cell):
    """timm's ``LayerScale2d``: ``x * gamma``, ``gamma`` of shape ``(C, 1, 1)`` as timm's."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = Parameter(Tensor(np.full((dim, 1, 1), init_value, np.float32)), name="gamma")
        self.dim = dim
        self.scale = ScaleChannels()

    def construct(self, x):
        return self.scale(x, self.gamma.reshape(self.dim))


class RepMixer(Reparameterizable):
    """timm's ``RepMixer``: ``x + layer_scale(mixer(x) - norm(x))`` with depthwise 3x3
    MobileOne blocks (``norm`` is its BatchNorm identity alone)."""

    branch_names = ("norm", "mixer")

    def __init__(self, dim: int, kernel: int, init_value: float, input_size: int):
        super().__init__()
        self.dim, self.kernel_size, self.input_size = dim, kernel, input_size
        self.norm = MobileOneBlock(dim, dim, kernel, 1, dim, input_size, use_act=False,
                                   use_scale_branch=False, num_conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel, 1, dim, input_size, use_act=False)
        self.layer_scale = LayerScale2d(dim, init_value)

    def construct(self, x):
        if self.reparameterized:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        mixer_k, mixer_b = self.mixer.fused_kernel()
        norm_k, norm_b = self.norm.fused_kernel()
        gamma = self.layer_scale.gamma.asnumpy().reshape(-1)
        identity = _identity_kernel(self.dim, 1, self.kernel_size)
        return (identity + gamma.reshape(-1, 1, 1, 1) * (mixer_k - norm_k), gamma * (mixer_b - norm_b))

    def fused_conv(self) -> nn.Cell:
        return conv2d(self.dim, self.dim, self.kernel_size, 1, self.dim, True, self.input_size)

    def fuses_inner(self) -> Tuple[nn.Cell, ...]:
        return (self.norm, self.mixer)


class ConvMlp(nn.Cell):
    """timm's FastViT ``ConvMlp``: ``conv`` (depthwise 7x7 + BatchNorm), ``fc1``, GELU, ``fc2``."""

    def __init__(self, dim: int, hidden: int, input_size: int):
        super().__init__()
        self.conv = ConvNormAct(dim, dim, 7, 1, dim, input_size)
        self.fc1 = Conv(dim, hidden, 1)
        self.act = make_activation("gelu")
        self.fc2 = Conv(hidden, dim, 1)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepConditionalPosEnc(Reparameterizable):
    """timm's ``RepConditionalPosEnc``: ``x + pos_enc(x)``, a depthwise 7x7 with a bias."""

    branch_names = ("pos_enc",)

    def __init__(self, dim: int, input_size: int):
        super().__init__()
        self.dim, self.input_size = dim, input_size
        self.pos_enc = conv2d(dim, dim, 7, 1, dim, True, input_size)

    def construct(self, x):
        if self.reparameterized:
            return self.reparam_conv(x)
        return self.pos_enc(x) + x

    def fused_kernel(self) -> Tuple[np.ndarray, np.ndarray]:
        return (_identity_kernel(self.dim, 1, 7) + self.pos_enc.weight.asnumpy(), self.pos_enc.bias.asnumpy())

    def fused_conv(self) -> nn.Cell:
        return conv2d(self.dim, self.dim, 7, 1, self.dim, True, self.input_size)


class RepMixerBlock(nn.Cell):
    """timm's ``RepMixerBlock``: ``token_mixer`` then ``x + layer_scale(mlp(x))``."""

    def __init__(self, arch: FastVitArch, dim: int, mlp_ratio: float, input_size: int, drop_path: float):
        super().__init__()
        self.token_mixer = RepMixer(dim, 3, arch.layer_scale_init_value, input_size)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), input_size)
        self.layer_scale = LayerScale2d(dim, arch.layer_scale_init_value)
        self.drop_path = drop_path_or_identity(drop_path)

    def construct(self, x):
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Cell):
    """timm's FastViT ``AttentionBlock``: ``x + ls1(attn(norm(x)))`` (heads of 32, q/k/v
    without a bias, over the map's positions), ``x + ls2(mlp(x))``."""

    def __init__(self, arch: FastVitArch, dim: int, mlp_ratio: float, input_size: int, drop_path: float):
        super().__init__()
        self.norm = ChannelNorm(dim, 1e-5) if arch.attn_norm == "layernorm" else BatchNorm(dim)
        self.token_mixer = Attention(dim, dim // 32, qkv_bias=False)
        self.layer_scale_1 = LayerScale2d(dim, arch.layer_scale_init_value)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), input_size)
        self.layer_scale_2 = LayerScale2d(dim, arch.layer_scale_init_value)
        self.drop_path2 = drop_path_or_identity(drop_path)

    def construct(self, x):
        b, h, w, c = x.shape
        y = self.token_mixer(self.norm(x).reshape(b, h * w, c)).reshape(b, h, w, c)
        x = x + self.drop_path1(self.layer_scale_1(y))
        return x + self.drop_path2(self.layer_scale_2(self.mlp(x)))


class FastVitStage(nn.Cell):
    """timm's ``FastVitStage``: ``downsample`` (a :class:`PatchEmbed`, or none), ``pos_emb``,
    ``blocks``."""

    def __init__(self, arch: FastVitArch, i: int, cin: int, input_size: int, rates: List[float]):
        super().__init__()
        dim = arch.embed_dims[i]
        downsample = arch.downsamples[i] or cin != dim
        self.downsample = PatchEmbed(cin, dim, input_size, arch.se_downsamples[i]) if downsample else nn.Identity()
        size = (input_size + 1) // 2 if downsample else input_size
        self.output_size = size
        self.pos_emb = RepConditionalPosEnc(dim, size) if arch.pos_embs[i] else nn.Identity()
        block = RepMixerBlock if arch.token_mixers[i] == "repmixer" else AttentionBlock
        self.blocks = Blocks(block(arch, dim, arch.mlp_ratios[i], size, rate) for rate in rates)

    def construct(self, x):
        return self.blocks(self.pos_emb(self.downsample(x)))


class FastVit(ConvTrunk):
    """timm's ``FastVit``: ``stem`` (three MobileOne blocks: 3x3/2 dense, 3x3/2 depthwise,
    1x1), ``stages``, ``final_conv`` (3x3 MobileOne doubling the width, squeeze-excite), then
    ``head``. Built in training form; ``reparameterize_model`` fuses it for inference."""

    family = "FastViT"

    def __init__(self, arch: FastVitArch, global_pool: str, num_classes: int = 0,
                 pool: Optional[str] = None, drop_path: float = 0.0, patch_dropout: float = 0.0):
        super().__init__(arch, global_pool, pool, patch_dropout)
        size, dim0 = arch.image_size, arch.embed_dims[0]
        half, quarter = (size + 1) // 2, (size + 3) // 4
        scale = arch.stem_use_scale_branch
        self.stem = nn.SequentialCell([
            MobileOneBlock(3, dim0, 3, 2, 1, size, use_scale_branch=scale),
            MobileOneBlock(dim0, dim0, 3, 2, dim0, half, use_scale_branch=scale),
            MobileOneBlock(dim0, dim0, 1, 1, 1, quarter, use_scale_branch=scale)])
        stages, cin, size = [], dim0, quarter
        for i, rates in enumerate(stage_drop_path_rates(drop_path, arch.layers)):
            stage = FastVitStage(arch, i, cin, size, rates)
            stages.append(stage)
            cin, size = arch.embed_dims[i], stage.output_size
        self.stages = nn.SequentialCell(stages)
        self.final_conv = MobileOneBlock(cin, arch.num_features, 3, 1, cin, size, use_se=True)
        self.head = ClassifierHead(arch.num_features, num_classes)
        self.num_features = num_classes if num_classes > 0 else arch.num_features

    def forward_features(self, x):
        return self.final_conv(self.stages(self.stem(x.transpose(0, 2, 3, 1))))

    def lock_groups(self) -> List[list]:
        """timm's ``group_matcher``: the stem, then per stage its downsampling + position
        encoding and each block, then ``final_conv`` and the head."""
        groups = [[self.stem]]
        for stage in self.stages:
            groups.append([stage.downsample, stage.pos_emb])
            groups.extend([block] for block in stage.blocks)
        return groups + [[self.final_conv, self.head]]


_MCI = dict(mlp_ratios=(3, 3, 3, 3), downsamples=(False, True, True, True),
            se_downsamples=(False, False, True, True), token_mixers=("repmixer",) * 3 + ("attention",),
            pos_embs=(False, False, False, True))
_MCI_L = dict(mlp_ratios=(4,) * 5, downsamples=(False, True, True, True, True), se_downsamples=(False,) * 5,
              token_mixers=("repmixer",) * 3 + ("attention",) * 2, pos_embs=(False, False, False, True, True),
              attn_norm="layernorm", stem_use_scale_branch=False)
for _name, _layers, _dims, _extra in (
        ("fastvit_mci0", (2, 6, 10, 2), (64, 128, 256, 512), _MCI),
        ("fastvit_mci1", (4, 12, 20, 4), (64, 128, 256, 512), _MCI),
        ("fastvit_mci2", (4, 12, 24, 4), (80, 160, 320, 640), _MCI),
        ("fastvit_mci3", (2, 12, 24, 4, 2), (96, 192, 384, 768, 1536), _MCI_L),
        ("fastvit_mci4", (2, 12, 24, 4, 4), (128, 256, 512, 1024, 2048), _MCI_L)):
    register_timm_model(_name, FastVitArch(layers=_layers, embed_dims=_dims, **_extra))

__all__ = ["FastVitArch", "FastVit"]
