"""CLIP's ModifiedResNet image tower (RN50, RN101, RN50x4, ...).

Differs from torchvision's ResNet as OpenAI describes it: a three-convolution stem with an
average pool, anti-aliased strided blocks (average pool before the stride), and attention
pooling in place of global average pooling.
"""
from __future__ import annotations

from collections import OrderedDict

import mindspore as ms
from mindspore import nn, ops

from .checkpointing import Blocks
from .config import CLIPVisionCfg
from .conv import Conv2d, choose_paths
from .layers import dense, normal_param




def _bn(channels: int) -> nn.BatchNorm2d:
    # MindSpore's momentum weighs the running value: 0.9 here is PyTorch's 0.1.
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)


class Bottleneck(nn.Cell):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, input_size: int = 0):
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 1)
        self.bn1 = _bn(planes)
        # anti-aliased: the 3x3 runs at the input's resolution, the average pool then strides
        self.conv2 = Conv2d(planes, planes, 3, input_size=input_size)
        self.bn2 = _bn(planes)
        self.avgpool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.conv3 = Conv2d(planes, planes * self.expansion, 1)
        self.bn3 = _bn(planes * self.expansion)
        # A zero last-BN scale makes every block start as the identity (open_clip's init).
        self.bn3.gamma.set_data(ops.zeros_like(self.bn3.gamma))
        self.relu = nn.ReLU()
        self.has_downsample = stride > 1 or inplanes != planes * self.expansion
        if self.has_downsample:
            # Keys "-1"/"0"/"1" reproduce the PyTorch parameter names downsample.0/1.*.
            self.downsample = nn.SequentialCell(OrderedDict([
                ("-1", nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()),
                ("0", Conv2d(inplanes, planes * self.expansion, 1)),
                ("1", _bn(planes * self.expansion)),
            ]))
        else:
            self.downsample = nn.Identity()

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class AttentionPool2d(nn.Cell):
    """Multi-head attention whose single query is the mean of the feature map."""

    def __init__(self, spacial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        std = embed_dim ** -0.5
        self.positional_embedding = normal_param((spacial_dim ** 2 + 1, embed_dim), std,
                                                 "positional_embedding")
        self.k_proj = dense(embed_dim, embed_dim, std)
        self.q_proj = dense(embed_dim, embed_dim, std)
        self.v_proj = dense(embed_dim, embed_dim, std)
        self.c_proj = dense(embed_dim, output_dim, std)
        self.heads = heads
        self.head_dim = embed_dim // heads

    def construct(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h * w).transpose(0, 2, 1)  # (B, HW, C)
        x = ops.concat((x.mean(axis=1, keep_dims=True), x), axis=1)
        x = x + self.positional_embedding.astype(x.dtype)
        n = x.shape[1]
        q = self.q_proj(x[:, :1, :]).reshape(b, 1, self.heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(b, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)
        attn = ops.matmul(q * (self.head_dim ** -0.5), k.transpose(0, 1, 3, 2))
        attn = ops.softmax(attn.astype(ms.float32), axis=-1).astype(v.dtype)
        out = ops.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, c)
        return self.c_proj(out)


class ModifiedResNet(nn.Cell):
    # a locked ResNet stays in eval mode, keeping its BatchNorm statistics (open_clip's
    # freeze_bn_stats)
    keeps_eval_when_locked = True

    def __init__(self, cfg: CLIPVisionCfg, embed_dim: int):
        super().__init__()
        width = cfg.width
        self.image_size = cfg.image_size
        size = cfg.image_size
        self.conv1 = Conv2d(3, width // 2, 3, stride=2, input_size=size)
        self.bn1 = _bn(width // 2)
        self.conv2 = Conv2d(width // 2, width // 2, 3, input_size=size // 2)
        self.bn2 = _bn(width // 2)
        self.conv3 = Conv2d(width // 2, width, 3, input_size=size // 2)
        self.bn3 = _bn(width)
        self.avgpool = nn.AvgPool2d(2, 2)
        self.relu = nn.ReLU()
        self._inplanes = width
        self.layer1 = self._make_layer(width, cfg.layers[0], 1, size // 4)
        self.layer2 = self._make_layer(width * 2, cfg.layers[1], 2, size // 4)
        self.layer3 = self._make_layer(width * 4, cfg.layers[2], 2, size // 8)
        self.layer4 = self._make_layer(width * 8, cfg.layers[3], 2, size // 16)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, width * 32, cfg.heads, embed_dim)
        choose_paths(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, input_size: int) -> nn.SequentialCell:
        layers = [Bottleneck(self._inplanes, planes, stride, input_size)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes, 1, input_size // stride) for _ in range(1, blocks)]
        return Blocks(layers)

    def construct(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

    def lock_groups(self) -> list:
        """open_clip's layer groups for locking: the stem, each stage, the attention pool."""
        return [[self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3],
                [self.layer1], [self.layer2], [self.layer3], [self.layer4], [self.attnpool]]
