"""Transformer building blocks shared by the image and text towers.

Parameter names mirror open_clip's (``ln_1``, ``attn.in_proj``, ``mlp.c_fc``...) with
MindSpore's own suffixes (``gamma``/``beta`` for norms), which are also the names
MindFormers 1.x CLIP checkpoints use, so those load without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from . import cpu_kernels
from .checkpointing import Blocks, set_grad_checkpointing


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (eps 1e-5, PyTorch's default) whatever the input dtype;
    on CPU through one fused kernel each way (:mod:`mindclip.models.cpu_kernels`)."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__((width,), begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self.kernel = _FusedLayerNorm(eps)
        self.fused = self.kernel.available

    def construct(self, x):
        orig = x.dtype
        x = x.astype(ms.float32)
        y = self.kernel(x, self.gamma, self.beta) if self.fused else super().construct(x)
        return y.astype(orig)


class _FusedLayerNorm(nn.Cell):
    # Its backward recomputes the row statistics from x instead of keeping them.

    def __init__(self, eps: float):
        super().__init__()
        self.forward = cpu_kernels.custom_op("LayerNormForward")
        self.backward = cpu_kernels.custom_op("LayerNormBackward", like=(0, 1, 1))
        self.available = self.forward is not None
        self.eps = Tensor([eps], ms.float32)

    def construct(self, x, gamma, beta):
        return self.forward(x, gamma, beta, self.eps)

    def bprop(self, x, gamma, beta, out, dout):
        return self.backward(x, gamma, dout, self.eps)


_SQRT_HALF = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2PI = 0.3989422804014327


class _Activation(nn.Cell):
    """An element-wise activation that carries its derivative as a ``bprop``, so training
    keeps only its input: MindSpore's automatic differentiation of the same expressions keeps
    each intermediate alive in its CPU graphs, twice the memory of the widest activation in
    every block. On CPU, float32 runs through one fused kernel each way
    (:mod:`mindclip.models.cpu_kernels`); elsewhere, or without a compiler, through ``ops``.
    """

    _kernel = ""  # name stem of its functions in cpu_kernels/kernels.cc

    def __init__(self):
        super().__init__()
        self.fused_forward = self._kernel and cpu_kernels.custom_op(self._kernel + "Forward")
        self.fused_backward = self._kernel and cpu_kernels.custom_op(self._kernel + "Backward")
        self.fused = bool(self.fused_forward)

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x)
        return self.formula(x)

    def bprop(self, x, out, dout):
        if self.fused and x.dtype == ms.float32:
            return (self.fused_backward(x, dout),)
        return (dout * self.derivative(x),)


class QuickGELU(_Activation):
    """``x * sigmoid(1.702 x)``, the activation OpenAI's weights were trained with."""

    _kernel = "QuickGelu"

    def formula(self, x):
        return x * ops.sigmoid(1.702 * x)

    def derivative(self, x):
        s = ops.sigmoid(1.702 * x)
        return s + 1.702 * x * s * (1.0 - s)


class GELU(_Activation):
    """Exact GELU, ``x/2 * (1 + erf(x/sqrt(2)))`` (PyTorch's ``nn.GELU()``).

    Not ``nn.GELU(approximate=False)``: that op is expanded in MindSpore's CPU graphs into
    kernels whose outputs are never freed, four activations' worth per call that stay
    resident for as long as the compiled graph lives (10 GB for 40 calls on a 64 MB tensor,
    against 0.2 GB for this form). ``nn.GELU()`` would also default to the tanh approximation.
    """

    _kernel = "Gelu"

    def formula(self, x):
        return 0.5 * x * (1.0 + ops.erf(x * _SQRT_HALF))

    def derivative(self, x):
        cdf = 0.5 * (1.0 + ops.erf(x * _SQRT_HALF))
        return cdf + x * ops.exp(-0.5 * x * x) * _INV_SQRT_2PI


class GELUTanh(_Activation):
    """GELU's tanh approximation (PyTorch's ``nn.GELU(approximate="tanh")``, open_clip's
    ``act_kwargs: {"approximate": "tanh"}``, SigLIP's), written as ``x * sigmoid(2 z)``, which
    equals ``x/2 * (1 + tanh(z))``: MindSpore 2.10's CPU ``tanh`` is off by up to 5e-5
    around z = 3.5 (2e-4 in the activation), its ``sigmoid`` is exact to float rounding."""

    _kernel = "GeluTanh"

    @staticmethod
    def _z2(x):
        return (2.0 * _SQRT_2_OVER_PI) * (x + 0.044715 * x * x * x)

    def formula(self, x):
        return x * ops.sigmoid(self._z2(x))

    def derivative(self, x):
        s = ops.sigmoid(self._z2(x))
        return s + x * s * (1.0 - s) * (2.0 * _SQRT_2_OVER_PI) * (1.0 + 0.134145 * x * x)


class SiLU(_Activation):
    """``x * sigmoid(x)`` (SwiGLU's gate activation, timm's ``nn.SiLU``)."""

    _kernel = "Silu"

    def formula(self, x):
        return x * ops.sigmoid(x)

    def derivative(self, x):
        s = ops.sigmoid(x)
        return s + x * s * (1.0 - s)


class ReLU(_Activation):
    """``max(x, 0)`` (T5's and NLLB's feed-forward)."""

    _kernel = None

    def formula(self, x):
        return ops.relu(x)

    def derivative(self, x):
        return (x > 0).astype(x.dtype)


ACTIVATIONS = {"gelu": GELU, "quick_gelu": QuickGELU, "gelu_tanh": GELUTanh, "silu": SiLU,
               "relu": ReLU}
# Hugging Face's ``hidden_act`` / ``activation_function`` names for the same functions
# (``gelu_new`` is the tanh approximation, computed here without MindSpore's inexact tanh)
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "swish": "silu"}


def make_activation(name: str) -> nn.Cell:
    """The activation Cell named ``gelu`` (exact), ``quick_gelu``, ``gelu_tanh``, ``silu`` or
    ``relu``, or by a Hugging Face name of one of them (``gelu_new``, ``gelu_pytorch_tanh``,
    ``swish``): one factory for every tower."""
    name = HF_ACTIVATIONS.get(name, name)
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS) + sorted(HF_ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass(frozen=True)
class BlockCfg:
    """What a transformer block is made of beyond its sizes: the activation's name, the
    LayerNorm epsilon and LayerScale's initial value (None: no LayerScale)."""

    act: str = "gelu"
    norm_eps: float = 1e-5
    ls_init_value: Optional[float] = None


def sync_phases(cell: nn.Cell) -> None:
    """Give every sub-cell the compile phase of its training flag. ``Cell.set_train`` sets
    the flag recursively but the phase only on the cell it is called on, and GRAPH mode
    caches a sub-cell's compiled graph by phase: calling ``model.visual`` (or a SimSiam
    head) in eval mode after a train-mode call would rerun the train graph (BatchNorm on
    batch statistics)."""
    for _, sub in cell.cells_and_names():
        sub.phase = "train" if sub.training else "predict"


class TrainModeMixin:
    """``set_train`` of the model classes: a locked image tower (``_image_locked``, set by
    ``lock_image_tower``) stays in eval mode, keeping its BatchNorm statistics, and every
    sub-cell gets the phase of its flag (:func:`sync_phases`)."""

    _image_locked = False

    def set_train(self, mode: bool = True):
        super().set_train(mode)
        if self._image_locked:
            self.visual.set_train(False)
        sync_phases(self)
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """open_clip's name: recompute every residual block of every tower in the backward
        pass (activation memory of one block instead of all; ~1.2-1.4x the step time). Set it
        before the first training step."""
        if not set_grad_checkpointing(self, enable) and enable:
            raise ValueError(f"{type(self).__name__} has no residual blocks to recompute")


_matmul = ops.MatMul()
_matmul_nt_2d = ops.MatMul(transpose_b=True)


def linear_2d(x: Tensor, weight: Tensor, transpose_b: bool = False, bias: Optional[Tensor] = None,
              add_bias: Optional[BiasAdd] = None) -> Tensor:
    """``x @ weight`` (``weight.T`` with ``transpose_b``) for ``x`` of any rank, as one 2-D
    product over the flattened leading axes: MindSpore's CPU batched matmul with a 2-D
    operand copies that operand once per batch row (64 copies of a 64 x 49408 vocabulary
    projection: 0.8 GB and most of a CoCa train step). ``bias`` goes through the caller's
    ``add_bias`` (a :class:`BiasAdd`)."""
    lead = x.shape[:-1]
    out = (_matmul_nt_2d if transpose_b else _matmul)(x.reshape(-1, x.shape[-1]), weight.astype(x.dtype))
    if bias is not None:
        out = add_bias(out, bias.astype(out.dtype))
    return out.reshape(lead + (out.shape[-1],))


class BiasAdd(nn.Cell):
    """``x (rows, C) + bias (C,)`` whose bias gradient is one ``(1 x rows) @ dout`` product:
    every bias of a projection goes through it, never a broadcast ``+`` (below)."""
    # MindSpore's CPU BiasAddGrad runs at 0.2 GFLOP/s (27 ms for one 1600 x 3072 gradient,
    # 1.1 s of a 6 s ViT-B/32 train step); a broadcast Add instead (its gradient a ReduceSum)
    # was as fast but raised that step's peak RSS from 6.3 to 10.4 GB.

    def __init__(self):
        super().__init__()
        self.bias_add = ops.BiasAdd()
        self.column_sums = ops.MatMul()

    def construct(self, x, bias):
        return self.bias_add(x, bias)

    def bprop(self, x, bias, out, dout):
        ones = ops.ones((1, dout.shape[0]), dout.dtype)
        grad = self.column_sums(ones, dout).reshape(bias.shape)
        return dout.astype(x.dtype), grad.astype(bias.dtype)


class Dense(nn.Dense):
    """``nn.Dense`` (same parameters, same forward) whose bias gradient is a matmul (see
    ``BiasAdd``). Activations are not supported (no tower uses them)."""

    def __init__(self, in_channels: int, out_channels: int, weight_init=None,
                 bias_init=None, has_bias: bool = True, dtype=ms.float32):
        super().__init__(in_channels, out_channels, weight_init=weight_init,
                         bias_init=bias_init, has_bias=has_bias, dtype=dtype)
        self.add_bias = BiasAdd()

    def construct(self, x):
        shape = x.shape
        y = self.matmul(x.reshape(-1, shape[-1]), self.weight)
        if self.has_bias:
            y = self.add_bias(y, self.bias.astype(y.dtype))
        return y.reshape(shape[:-1] + (y.shape[-1],))


def dense(in_dim: int, out_dim: int, std: float, has_bias: bool = True) -> Dense:
    return Dense(in_dim, out_dim, weight_init=Normal(std), bias_init="zeros", has_bias=has_bias)


def normal_param(shape, std: float, name: str) -> Parameter:
    return Parameter(initializer(Normal(std), shape, ms.float32), name=name)


def causal_mask(length: int) -> Tensor:
    """Additive mask: 0 on and below the diagonal, a large negative number above it."""
    mask = np.triu(np.full((length, length), -np.inf, dtype=np.float32), k=1)
    # -inf * 0 would give NaN inside fused kernels; a finite floor is as good after softmax.
    mask[np.isinf(mask)] = np.finfo(np.float32).min
    return Tensor(mask)


def attention_per_head() -> bool:
    """Whether attention runs head by head (:class:`PerHeadAttention`): on CPU."""
    return ms.get_context("device_target") == "CPU"


_bmm = ops.BatchMatMul()
_bmm_nt = ops.BatchMatMul(transpose_b=True)
_bmm_tn = ops.BatchMatMul(transpose_a=True)


class PerHeadAttention(nn.Cell):
    """``softmax(q k^T / sqrt(d) + mask) v`` head by head on ``(B, L, D)`` queries, keys and
    values, heads concatenated back to ``(B, L, D)``; ``mask`` is additive and broadcasts
    against one head's ``(B, L, L)`` scores (a 0-d zero for none), a constant. With
    ``head_bias`` it is instead a learned ``(heads, L, L)`` bias, one per head (relative
    position biases), and gets its gradient.

    The attention of the CLIP and BERT towers on CPU. Column slices of a projection are the
    heads' ``(B, L, head_dim)`` matrices already, so no transposes are needed: MindSpore
    2.10's CPU graphs neither free nor reuse the outputs of the 4-D/5-D transposes of the
    batched layout, and run them slowly. The backward pass is written by hand and recomputes
    each head's probabilities from q and k (as flash attention does): automatic
    differentiation of the forward keeps every slice, score, probability and per-head output
    alive, ~25 activations' worth per block against the 3 this keeps (q, k, v).
    Primitives rather than ``ops`` functions: GRAPH mode cannot compile a function graph
    that both ``construct`` and ``bprop`` call.

    Where the kernels are built (``fused = True``), float32 on CPU runs through one
    fused kernel each way (``AttentionForward`` / ``AttentionBackward`` in
    :mod:`mindclip.models.cpu_kernels`), same function, same recomputation: MindSpore's CPU
    runtime does not reuse the memory of the op-by-op backward's per-head slices, products
    and concatenations from block to block (~10 activations' worth per block stay resident
    until the step ends, ~1.0 GB of a ViT-B/32 step at batch 32).
    """

    def __init__(self, heads: int, head_dim: int, head_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.head_bias = head_bias
        self.fused_forward = cpu_kernels.custom_op("AttentionForward")
        self.fused_backward = cpu_kernels.custom_op("AttentionBackward", like=(0, 1, 2, 3))
        self.fused = self.fused_forward is not None
        self.meta = Tensor([heads, self.scale, float(head_bias)], ms.float32)
        self.split_heads = ops.Split(axis=-1, output_num=heads)
        self.split_bias = ops.Split(axis=0, output_num=heads)
        self.concat = ops.Concat(axis=-1)
        self.concat_bias = ops.Concat(axis=0)
        self.softmax = ops.Softmax(axis=-1)
        self.cast = ops.Cast()
        self.row_sum = ops.ReduceSum(keep_dims=True)

    # Every op below runs once per head, so each one saved is 12 kernel launches per block
    # (ViT-B): q is scaled before the split, and the casts and the mask add are compiled in
    # only when there is something to cast or mask (dtypes and ranks are static in a graph).

    def _to(self, x, dtype):
        return x if x.dtype == dtype else self.cast(x, dtype)

    def probs(self, q, k, mask):
        """fp32 softmax of the scores of (pre-scaled) ``q`` and ``k``, so that fp16
        activations keep PyTorch's accuracy."""
        scores = self._to(_bmm_nt(q, k), ms.float32)
        if mask.ndim != 0:
            scores = scores + mask
        return self.softmax(scores)

    def _masks(self, mask):
        """Each head's mask: its slice of a per-head bias, else the shared one."""
        if self.head_bias:
            return self.split_bias(mask)
        return (mask,) * self.heads

    def _fuses(self, q, k, mask):
        # the kernel takes float32, one batch for queries and keys and masks of up to 3
        # dimensions (all static in a graph)
        return self.fused and q.dtype == ms.float32 and q.shape[0] == k.shape[0] and mask.ndim <= 3

    def construct(self, q, k, v, mask):
        if self._fuses(q, k, mask):
            return self.fused_forward(q, k, v, self._to(mask, ms.float32), self.meta)
        qs, ks, vs = self.split_heads(q * self.scale), self.split_heads(k), self.split_heads(v)
        masks = self._masks(mask)
        outs = []
        for i in range(self.heads):
            outs.append(_bmm(self._to(self.probs(qs[i], ks[i], masks[i]), v.dtype), vs[i]))
        return self.concat(outs)

    def bprop(self, q, k, v, mask, out, dout):
        if self._fuses(q, k, mask):
            return self.fused_backward(q, k, v, self._to(mask, ms.float32), self.meta, dout)
        f32 = ms.float32
        qs = self.split_heads(self._to(q, f32) * self.scale)
        ks, vs = self.split_heads(self._to(k, f32)), self.split_heads(self._to(v, f32))
        douts = self.split_heads(self._to(dout, f32))
        masks = self._masks(mask)
        grads_q, grads_k, grads_v, grads_bias = [], [], [], []
        for i in range(self.heads):
            p = self.probs(qs[i], ks[i], masks[i])
            grads_v.append(_bmm_tn(p, douts[i]))
            dp = _bmm_nt(douts[i], vs[i])
            dz = p * (dp - self.row_sum(dp * p, -1))
            grads_q.append(_bmm(dz, ks[i]) * self.scale)
            grads_k.append(_bmm_tn(dz, qs[i]))
            if self.head_bias:  # the bias is added to every sample's scores
                grads_bias.append(self.row_sum(dz, 0))
        dmask = self.concat_bias(grads_bias) if self.head_bias else mask * 0.0
        return (self._to(self.concat(grads_q), q.dtype), self._to(self.concat(grads_k), k.dtype),
                self._to(self.concat(grads_v), v.dtype), dmask)


class PackedSelfAttention(nn.Cell):
    """Multi-head self-attention over the output of a packed q/k/v projection
    ``(B, L, 3 * width)`` -> ``(B, L, width)``, before the output projection; the towers'
    attention modules hold the two projections under their own names (open_clip's
    ``in_proj``/``out_proj``, timm's ``qkv``/``proj``).

    Softmax runs in fp32 so that fp16 activations keep PyTorch's accuracy. ``mask`` is
    additive, ``(L, L)`` or ``(B, L, L)``, or a 0-d zero for none; with ``head_bias`` a
    learned ``(heads, L, L)`` bias (relative positions).

    On CPU the heads run one by one on slices of the projection (``per_head``,
    :class:`PerHeadAttention`, which says why); Ascend and GPU keep the batched layout their
    fused kernels expect. Both give the same results to float rounding.
    """

    def __init__(self, width: int, heads: int, head_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.per_head = attention_per_head()
        self.head_bias = head_bias
        self.core = PerHeadAttention(heads, self.head_dim, head_bias)
        self.split_qkv = ops.Split(axis=-1, output_num=3)
        self.no_mask = Tensor(0.0, ms.float32)

    def attend(self, qkv, attn_mask: Optional[Tensor] = None):
        """Attention over a packed ``(B, L, 3 * width)`` projection."""
        q, k, v = self.split_qkv(qkv)
        return self.attend_split(q, k, v, attn_mask)

    def attend_split(self, q, k, v, attn_mask: Optional[Tensor] = None):
        """Attention over ``(B, L, width)`` queries, keys and values, each with the heads as
        column blocks: the seam where a tower transforms q and k (2-D RoPE, q/k norms) after
        the projection and before the core."""
        mask = self.no_mask if attn_mask is None else attn_mask
        if self.per_head:
            return self.core(q, k, v, mask)
        b, n, d = q.shape
        if mask.ndim == 3 and not self.head_bias:  # one mask per sample, for every head
            mask = mask.reshape(b, 1, n, n)
        attn = self.core.probs(self._heads(q) * self.core.scale, self._heads(k), mask).astype(q.dtype)
        return ops.matmul(attn, self._heads(v)).transpose(0, 2, 1, 3).reshape(b, n, d)

    def _heads(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)


class MultiheadSelfAttention(PackedSelfAttention):
    """open_clip's batch-first attention: packed ``in_proj``, then ``out_proj``."""

    def __init__(self, width: int, heads: int, attn_std: float, proj_std: float):
        super().__init__(width, heads)
        self.in_proj = dense(width, 3 * width, attn_std)
        self.out_proj = dense(width, width, proj_std)

    def construct(self, x, attn_mask: Optional[Tensor] = None):
        return self.out_proj(self.attend(self.in_proj(x), attn_mask))


class MLP(nn.Cell):
    def __init__(self, width: int, hidden: int, act: str, fc_std: float, proj_std: float):
        super().__init__()
        self.c_fc = dense(width, hidden, fc_std)
        self.gelu = make_activation(act)
        self.c_proj = dense(hidden, width, proj_std)

    def construct(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ScaleChannels(nn.Cell):
    """``x * gamma`` over the last axis, ``construct(x, gamma)``: LayerScale's product. On CPU,
    float32 runs through one fused kernel each way: MindSpore's broadcasting CPU ``Mul`` held
    ~8 activations' worth per LayerScale until the step ended (a ViT-B block at batch 32:
    240 MB against 160 MB without LayerScale; 165 MB with this)."""

    def __init__(self):
        super().__init__()
        self.fused_forward = cpu_kernels.custom_op("ScaleChannelsForward")
        self.fused_backward = cpu_kernels.custom_op("ScaleChannelsBackward", like=(0, 1))
        self.fused = self.fused_forward is not None

    def construct(self, x, gamma):
        gamma = gamma.astype(x.dtype)
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, gamma)
        return x * gamma

    def bprop(self, x, gamma, out, dout):
        if self.fused and x.dtype == ms.float32:
            return self.fused_backward(x, gamma.astype(x.dtype), dout)
        rows = dout.reshape(-1, dout.shape[-1]) * x.reshape(-1, x.shape[-1])
        return dout * gamma.astype(dout.dtype), rows.sum(axis=0).astype(gamma.dtype)


class LayerScale(nn.Cell):
    """``x * gamma``, a learned per-channel scale of a residual branch (CaiT; open_clip's
    ``ls_init_value``)."""

    def __init__(self, width: int, init_value: float):
        super().__init__()
        self.gamma = Parameter(Tensor(np.full((width,), init_value, np.float32)), name="gamma")
        self.scale = ScaleChannels()

    def construct(self, x):
        return self.scale(x, self.gamma)


class ResidualAttentionBlock(nn.Cell):
    """Pre-norm transformer block: ``x + ls_1(attn(ln_1(x)))`` then ``x + ls_2(mlp(ln_2(x)))``
    (``ls_*`` are identities without LayerScale, as in open_clip)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, block: BlockCfg, layers: int):
        super().__init__()
        # open_clip's initialisation, so that training from scratch starts where it does.
        attn_std = width ** -0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        self.ln_1 = LayerNorm(width, block.norm_eps)
        self.attn = MultiheadSelfAttention(width, heads, attn_std, proj_std)
        self.ln_2 = LayerNorm(width, block.norm_eps)
        self.mlp = MLP(width, int(width * mlp_ratio), block.act, fc_std, proj_std)
        scaled = block.ls_init_value is not None
        self.ls_1 = LayerScale(width, block.ls_init_value) if scaled else nn.Identity()
        self.ls_2 = LayerScale(width, block.ls_init_value) if scaled else nn.Identity()

    def construct(self, x, attn_mask: Optional[Tensor] = None):
        x = x + self.ls_1(self.attn(self.ln_1(x), attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Cell):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float,
                 block: BlockCfg = BlockCfg()):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = Blocks(ResidualAttentionBlock(width, heads, mlp_ratio, block, layers)
                                for _ in range(layers))

    def construct(self, x, attn_mask: Optional[Tensor] = None):
        if attn_mask is not None:
            # Broadcasting an (L, L) mask inside every head's add keeps a (B, L, L) copy per
            # head alive on CPU; one broadcast here is shared by all of them.
            attn_mask = ops.broadcast_to(attn_mask, (x.shape[0],) + attn_mask.shape[-2:])
        return self.resblocks(x, attn_mask)
