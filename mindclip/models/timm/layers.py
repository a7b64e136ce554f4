"""The pieces timm's ViT-shaped trunks are built from, under timm's names (``Mlp``,
``SwiGLU``, ``GluMlp``, ``Attention``, ``AttentionPoolLatent``, ``RotaryEmbeddingCat``), so
checkpoints convert by renaming norm suffixes only.

Attention runs through :class:`~mindclip.models.layers.PackedSelfAttention`'s
``attend_split``: q, k and v stay ``(B, L, width)`` with the heads as column blocks, and the
q/k transforms (2-D RoPE, q/k norms) act on that layout, so no per-head transposes are added
on CPU.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from .. import cpu_kernels
from ..layers import BiasAdd, Dense, LayerNorm, PackedSelfAttention, PerHeadAttention, make_activation
from ..patch import PatchEmbedding
from ..rng import dropout_or_identity

STD = 0.02  # timm's init of Linear weights and position tables


def linear(in_dim: int, out_dim: int, has_bias: bool = True) -> Dense:
    """timm's ``nn.Linear`` with its initialisation (truncated normal 0.02, zero bias)."""
    return Dense(in_dim, out_dim, weight_init=TruncatedNormal(STD), bias_init="zeros", has_bias=has_bias)


def trunc_normal_param(shape, std: float, name: str) -> Parameter:
    return Parameter(initializer(TruncatedNormal(std), shape, ms.float32), name=name)


def norm_or_identity(width: int, eps: float, enabled: bool) -> nn.Cell:
    return LayerNorm(width, eps) if enabled else nn.Identity()


class PatchEmbed(nn.Cell):
    """timm's ``PatchEmbed``: the convolution as ``proj`` (a matmul over patches on CPU)."""

    def __init__(self, width: int, patch_size: int, has_bias: bool = True):
        super().__init__()
        self.proj = PatchEmbedding(width, patch_size, has_bias=has_bias)

    def construct(self, x):
        return self.proj(x)


class Mlp(nn.Cell):
    """timm's ``Mlp``: ``fc2(norm(drop1(act(fc1(x)))))``; ``norm`` is NormFormer's scale norm
    (EVA02's ``scale_mlp``), an identity otherwise; ``drop1`` a dropout in training (timm's
    ``drop=(p, 0)``)."""

    def __init__(self, width: int, hidden: int, act: str = "gelu", norm_eps: Optional[float] = None,
                 out_dim: Optional[int] = None, bias: Tuple[bool, bool] = (True, True),
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = linear(width, hidden, bias[0])
        self.act = make_activation(act)
        self.drop1 = dropout_or_identity(drop)
        self.norm = norm_or_identity(hidden, norm_eps or 0.0, norm_eps is not None)
        self.fc2 = linear(hidden, out_dim or width, bias[1])

    def construct(self, x):
        return self.fc2(self.norm(self.drop1(self.act(self.fc1(x)))))


class SwiGLU(nn.Cell):
    """timm's ``SwiGLU`` (split gate and value projections, EVA02's MLP):
    ``fc2(norm(silu(fc1_g(x)) * fc1_x(x)))``."""

    def __init__(self, width: int, hidden: int, norm_eps: Optional[float] = None):
        super().__init__()
        self.fc1_g = linear(width, hidden)
        self.fc1_x = linear(width, hidden)
        self.act = make_activation("silu")
        self.norm = norm_or_identity(hidden, norm_eps or 0.0, norm_eps is not None)
        self.fc2 = linear(hidden, width)

    def construct(self, x):
        return self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))


class GluMlp(nn.Cell):
    """timm's ``GluMlp`` with ``gate_last=False``: one ``fc1`` of twice the hidden width whose
    first half, activated, gates the second."""

    def __init__(self, width: int, hidden: int, act: str = "silu", norm_eps: Optional[float] = None):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"GluMlp needs an even hidden width, got {hidden}")
        self.fc1 = linear(width, hidden)
        self.act = make_activation(act)
        self.norm = norm_or_identity(hidden // 2, norm_eps or 0.0, norm_eps is not None)
        self.fc2 = linear(hidden // 2, width)
        self.split = ops.Split(axis=-1, output_num=2)

    def construct(self, x):
        gate, value = self.split(self.fc1(x))
        return self.fc2(self.norm(self.act(gate) * value))


def drop_path_rates(rate: float, depth: int) -> Sequence[float]:
    """timm's stochastic depth decay rule: linear from 0 to ``rate`` over the blocks."""
    return [float(x) for x in np.linspace(0.0, rate, depth)] if depth > 1 else [float(rate)] * depth


def stage_drop_path_rates(rate: float, depths: Sequence[int]) -> List[List[float]]:
    """The same rule over staged blocks (timm's ``calculate_drop_path_rates(stagewise=True)``):
    linear over all of them, split into the stages' ``depths``."""
    rates, start, stages = drop_path_rates(rate, sum(depths)), 0, []
    for depth in depths:
        stages.append(list(rates[start:start + depth]))
        start += depth
    return stages


class HeadNorm(LayerNorm):
    """A LayerNorm over each head's columns of a ``(B, L, heads * head_dim)`` tensor (timm's
    ``q_norm``/``k_norm``, applied to ``(B, heads, L, head_dim)`` there)."""

    def __init__(self, heads: int, head_dim: int, eps: float):
        super().__init__(head_dim, eps)
        self.heads, self.head_dim = heads, head_dim

    def construct(self, x):
        b, n, d = x.shape
        return super().construct(x.reshape(b, n, self.heads, self.head_dim)).reshape(b, n, d)


def rope_tables(grid: Tuple[int, int], head_dim: int, heads: int, prefix_tokens: int = 0,
                temperature: float = 10000.0, ref_grid: Optional[Tuple[int, int]] = None,
                grid_offset: float = 0.0, grid_indexing: str = "ij") -> Tuple[np.ndarray, np.ndarray]:
    """The 2-D rotary embedding of timm's ``RotaryEmbeddingCat`` (``in_pixels=False``,
    interleaved layout) for a ``grid`` of (rows, columns) patches, as ``(cos, signed_sin)``
    tables of shape ``(prefix_tokens + rows * cols, heads * head_dim)``: every head rotates
    alike, and the prefix tokens (class token) are left unrotated (cos 1, sin 0), as timm
    leaves them. ``signed_sin`` carries the sign of timm's ``rot``, so that
    ``rope(x) = x * cos + swap_pairs(x) * signed_sin``.

    Computed in float32 in timm's order of operations: ``bands = 1 / temperature **
    (arange(head_dim // 4) / (head_dim // 4))``; coordinates ``arange(n) + grid_offset``,
    rescaled to ``ref_grid`` when given (EVA's fine-tune rule), the axes swapped for ``xy``
    indexing (PE-Core)."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    if grid_indexing not in ("ij", "xy"):
        raise ValueError(f"rope grid_indexing {grid_indexing!r} is not one of ['ij', 'xy']")
    f32 = np.float32
    bands_n = head_dim // 4
    bands = f32(1.0) / (f32(temperature) ** (np.arange(bands_n).astype(f32) / f32(bands_n)))
    shape, ref = list(grid), list(ref_grid) if ref_grid is not None else None
    if grid_indexing == "xy":
        shape = shape[::-1]
        ref = ref[::-1] if ref is not None else None
    axes = [np.arange(s).astype(f32) + f32(grid_offset) for s in shape]
    if ref is not None:
        axes = [a / f32(s) * f32(r) for a, s, r in zip(axes, shape, ref)]
    coords = np.stack(np.meshgrid(*axes, indexing=grid_indexing), axis=-1)  # (rows, cols, 2)
    angles = (coords[..., None] * bands).reshape(-1, 2 * bands_n)           # (n, head_dim / 2)
    sin = np.repeat(np.sin(angles).astype(f32), 2, axis=-1)
    cos = np.repeat(np.cos(angles).astype(f32), 2, axis=-1)
    sin[:, 0::2] *= -1.0
    sin = np.concatenate([np.zeros((prefix_tokens, head_dim), f32), sin])
    cos = np.concatenate([np.ones((prefix_tokens, head_dim), f32), cos])
    return np.tile(cos, (1, heads)), np.tile(sin, (1, heads))


class RotaryEmbeddingCat(nn.Cell):
    """timm's ``RotaryEmbeddingCat`` for a fixed grid: the constant tables of
    :func:`rope_tables`, handed to every block (``construct`` returns ``(cos, signed_sin)``)."""

    def __init__(self, grid: Tuple[int, int], head_dim: int, heads: int, prefix_tokens: int,
                 ref_grid: Optional[Tuple[int, int]], grid_offset: float, grid_indexing: str):
        super().__init__()
        cos, sin = rope_tables(grid, head_dim, heads, prefix_tokens, ref_grid=ref_grid,
                               grid_offset=grid_offset, grid_indexing=grid_indexing)
        self.cos, self.sin = Tensor(cos), Tensor(sin)

    def construct(self):
        return self.cos, self.sin


def _swap_pairs(x):
    b, n, d = x.shape
    return ops.flip(x.reshape(b, n, d // 2, 2), (-1,)).reshape(b, n, d)


def apply_rope(x, cos, sin):
    """``x * cos + rot(x) * sin`` for a ``(B, L, D)`` tensor and ``(L, D)`` or ``(B, L, D)``
    tables: each pair of columns swapped (timm's interleaved ``rot``; the sign is in ``sin``)."""
    return x * cos.astype(x.dtype) + _swap_pairs(x) * sin.astype(x.dtype)


class ApplyRope(nn.Cell):
    """:func:`apply_rope` as one fused pass each way on CPU (float32; MindSpore's reshape +
    flip for the pair swap cost a quarter of an EVA02 forward), through ``ops`` elsewhere.
    Its backward is the rotation's transpose, ``dout * cos + swap(dout * sin)``. The tables
    are ``(L, D)``, or ``(B, L, D)`` under patch dropout (each sample's kept patches)."""

    def __init__(self):
        super().__init__()
        self.fused_forward = cpu_kernels.custom_op("RopeForward")
        self.fused_backward = cpu_kernels.custom_op("RopeBackward")
        self.fused = self.fused_forward is not None

    def construct(self, x, cos, sin):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, cos, sin)
        return apply_rope(x, cos, sin)

    def bprop(self, x, cos, sin, out, dout):
        if self.fused and x.dtype == ms.float32:
            dx = self.fused_backward(dout, cos, sin)
        else:
            dx = dout * cos.astype(dout.dtype) + _swap_pairs(dout * sin.astype(dout.dtype))
        return dx, ops.zeros_like(cos), ops.zeros_like(sin)


class Attention(PackedSelfAttention):
    """timm's self-attention modules in one Cell, under their parameter names:

    - ``Attention`` (ViT) and ``AttentionRope`` (PE-Core): fused ``qkv`` with a bias
      (``qkv_bias``), or separate ``q_proj``/``k_proj``/``v_proj``;
    - ``EvaAttention`` (``k_bias=False``): fused ``qkv`` without a bias plus ``q_bias`` and
      ``v_bias`` (k's bias is zero, EVA01/EVA02-E), or separate projections with no bias on k
      (EVA02);

    then ``q_norm``/``k_norm`` (per head), the rotary embedding (the tokens after the class
    token), the attention core with ``rel_pos``'s learned per-head bias if given
    (``RelPosAttention``), ``norm`` (EVA02's ``scale_attn_inner``) and ``proj``.
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, fused: bool = True,
                 k_bias: bool = True, qk_norm: bool = False, scale_norm: bool = False,
                 norm_eps: float = 1e-6, rel_pos: Optional[nn.Cell] = None):
        super().__init__(width, heads, head_bias=rel_pos is not None)
        self.fused_qkv = fused  # (`fused` is the CPU-kernel flag cpu_kernels.portable turns off)
        self.eva_bias = fused and qkv_bias and not k_bias
        if fused:
            self.qkv = linear(width, 3 * width, qkv_bias and k_bias)
            if self.eva_bias:
                self.q_bias = Parameter(Tensor(np.zeros(width, np.float32)), name="q_bias")
                self.v_bias = Parameter(Tensor(np.zeros(width, np.float32)), name="v_bias")
                self.zero_k_bias = Tensor(np.zeros(width, np.float32))
                self.add_bias = BiasAdd()  # never a broadcast `+` (see BiasAdd)
        else:
            self.q_proj = linear(width, width, qkv_bias)
            self.k_proj = linear(width, width, qkv_bias and k_bias)
            self.v_proj = linear(width, width, qkv_bias)
        head_dim = width // heads
        self.q_norm = HeadNorm(heads, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = HeadNorm(heads, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.norm = norm_or_identity(width, norm_eps, scale_norm)
        if rel_pos is not None:
            self.rel_pos = rel_pos
        self.proj = linear(width, width)
        self.rope = ApplyRope()

    def project(self, x):
        """``(q, k, v)``, each ``(B, L, width)``."""
        if not self.fused_qkv:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        qkv = self.qkv(x)
        if self.eva_bias:
            bias = ops.concat((self.q_bias, self.zero_k_bias, self.v_bias)).astype(qkv.dtype)
            qkv = self.add_bias(qkv.reshape(-1, qkv.shape[-1]), bias).reshape(qkv.shape)
        return self.split_qkv(qkv)

    def construct(self, x, rope=None):
        q, k, v = self.project(x)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = self.rope(q, rope[0], rope[1]), self.rope(k, rope[0], rope[1])
        bias = self.rel_pos() if self.head_bias else None
        return self.proj(self.norm(self.attend_split(q, k, v, bias)))


class AttentionPoolLatent(nn.Cell):
    """timm's MAP head (``AttentionPoolLatent``, SigLIP's and PE-Core's pooling): one learned
    ``latent`` query attends to every token (``q``; packed ``kv``; ``proj``) with ``heads``
    heads of its own, then ``x + mlp(norm(x))``; the query's output is the pooled feature."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, norm_eps: float):
        super().__init__()
        self.width = width
        self.latent = trunc_normal_param((1, 1, width), width ** -0.5, "latent")
        self.q = linear(width, width)
        self.kv = linear(width, 2 * width)
        self.proj = linear(width, width)
        self.norm = LayerNorm(width, norm_eps)
        self.mlp = Mlp(width, int(width * mlp_ratio), act)
        self.core = PerHeadAttention(heads, width // heads)
        self.split_kv = ops.Split(axis=-1, output_num=2)
        self.no_mask = Tensor(0.0, ms.float32)

    def construct(self, x):
        b = x.shape[0]
        q = self.q(ops.broadcast_to(self.latent.astype(x.dtype), (b, 1, self.width)))
        k, v = self.split_kv(self.kv(x))
        x = self.proj(self.core(q, k, v, self.no_mask))
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


def pool_tokens(x, pool: str, prefix_tokens: int):
    """timm's ``global_pool_nlc``: the class token, the mean of the other tokens, or all."""
    if pool == "token":
        return x[:, 0]
    if pool == "avg":
        return x[:, prefix_tokens:].mean(axis=1)
    return x
