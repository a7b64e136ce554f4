"""Random draws that a resumed run repeats exactly: counter-based, computed in the graph.

MindSpore's random kernels (``UniformReal``, ``StandardNormal``, ``Dropout``) keep their
state inside the kernel, out of a checkpoint's reach: a run resumed at step k draws what a
fresh run drew at step 0, so its stochastic depth, dropout and patch dropout, and from there
its weights, leave those of the run that was never interrupted. Here a draw is a pure
function of ``(key, counter, element index)``: a 32-bit integer hash (the shape of Wellons'
``lowbias32``, with multipliers below 2**31 so that no int64 product overflows on any
backend) in ordinary integer ops, the same in GRAPH and PyNative mode. ``(key, counter)`` is
an int64 Parameter, ``rng_state``, that each draw advances: training checkpoints save and
restore it with the weights; weight files leave it out (:func:`weight_parameters`).
"""
from __future__ import annotations

import itertools
import zlib
from typing import Dict, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

STATE = "rng_state"
MASK = 0xFFFFFFFF
MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
SHIFTS = (16, 15, 15)

_instances = itertools.count()


def is_rng_state(name: str) -> bool:
    """Whether the parameter ``name`` is a stochastic layer's draw state, not a weight."""
    return name == STATE or name.endswith("." + STATE)


def weight_parameters(model: nn.Cell) -> Dict[str, Parameter]:
    """``model.parameters_dict()`` without the draw states: what weight files hold."""
    return {k: p for k, p in model.parameters_dict().items() if not is_rng_state(k)}


def _key(*parts) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode())


def _fresh_key() -> int:
    # reproducible under mindspore.set_seed, as MindSpore's own random ops are
    seed = ms.get_seed()
    if seed is None:
        return int(np.random.default_rng().integers(MASK + 1))
    return _key(seed, next(_instances))


def seed_rng_states(model: nn.Cell, seed: int, rank: int = 0) -> int:
    """Key every draw state of ``model`` by ``seed``, ``rank`` (ranks draw apart, as
    open_clip seeds each rank's torch generator) and the state's path in the model, with
    the counters at 0; returns how many states there are.

    Each state is also given its full path as its name: a cell attached after the model was
    built (``set_patch_dropout``) is named by MindSpore with its own attribute only, and a
    checkpoint finds a state by name."""
    count = 0
    for name, param in model.parameters_and_names():
        if is_rng_state(name):
            param.name = name
            param.set_data(Tensor(np.array([_key(seed, rank, name), 0], np.int64)))
            count += 1
    return count


def _mix(x):
    shift, xor, mask = ops.RightShift(), ops.BitwiseXor(), Tensor(MASK, ms.int64)
    x = xor(x, shift(x, Tensor(SHIFTS[0], ms.int64)))
    for multiplier, s in zip(MULTIPLIERS, SHIFTS[1:]):
        x = ops.BitwiseAnd()(x * multiplier, mask)
        x = xor(x, shift(x, Tensor(s, ms.int64)))
    return x


class Stochastic(nn.Cell):
    """Base of a layer that draws random numbers in training: ``uniform(shape)`` gives
    float32 numbers in [0, 1) and advances the layer's ``rng_state``. A layer built inactive
    (probability 0) holds no state and must not draw."""

    def __init__(self, active: bool = True):
        super().__init__()
        if active:
            self.rng_state = Parameter(Tensor(np.array([_fresh_key(), 0], np.int64)), name=STATE,
                                       requires_grad=False)
            self._step = Tensor(np.array([0, 1], np.int64))

    def uniform(self, shape: Tuple[int, ...]):
        state = self.rng_state
        key, counter = state[0], state[1]
        base = _mix(ops.BitwiseXor()(key, _mix(counter)))
        index = ops.arange(0, int(np.prod(shape)), dtype=ms.int64)
        bits = _mix(ops.BitwiseXor()(_mix(ops.BitwiseXor()(index, base)), key))
        values = ops.RightShift()(bits, Tensor(8, ms.int64)).astype(ms.float32) * (2.0 ** -24)
        # The write waits for the numbers: MindSpore's CPU runtime may run an assign before
        # other readers of the value it replaces have run (a read is not a copy).
        advanced = ops.assign(self.rng_state, ops.depend(state + self._step, values))
        return ops.depend(values.reshape(shape), advanced)


class Dropout(Stochastic):
    """Dropout (``torch.nn.Dropout``): in training, each element is zeroed with probability
    ``prob`` and the kept ones scaled by ``1 / (1 - prob)``."""

    def __init__(self, prob: float):
        super().__init__()
        self.keep = 1.0 - float(prob)

    def mask_shape(self, x) -> Tuple[int, ...]:
        return x.shape

    def construct(self, x):
        if not self.training:
            return x
        mask = ops.floor(self.uniform(self.mask_shape(x)) + self.keep).astype(x.dtype)
        return x * mask / self.keep


class DropPath(Dropout):
    """Stochastic depth (timm's ``DropPath``): in training, a residual branch is dropped for
    a whole sample with probability ``prob`` and the kept ones scaled by ``1 / (1 - prob)``."""

    def mask_shape(self, x) -> Tuple[int, ...]:
        return (x.shape[0],) + (1,) * (x.ndim - 1)


def drop_path_or_identity(prob: float) -> nn.Cell:
    return DropPath(prob) if prob > 0 else nn.Identity()


def dropout_or_identity(prob: float) -> nn.Cell:
    return Dropout(prob) if prob > 0 else nn.Identity()
