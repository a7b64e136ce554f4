"""Mixed precision for training: which backends run which precision, the compute cast, and
the loss scale (static or dynamic) that keeps fp16 gradients representable.

The cast follows MindSpore's AMP white list: Dense and Conv cells (and the attention
matmuls fed by them) compute in the low precision; LayerNorm/BatchNorm, softmax and the
losses stay fp32 (the layers cast for themselves), and so do the master weights and the
optimizer moments, which are never cast.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

DTYPES = {"fp16": ms.float16, "bf16": ms.bfloat16}

# MindSpore 2.10 on CPU has no bf16 MatMul/LayerNorm/Softmax/Conv2D kernels (measured); Ascend
# 910B is bf16's home. GPU bf16 is not offered: untested here, and fp16 is the GPU AMP norm.
SUPPORTED = {"Ascend": ("fp32", "fp16", "bf16"), "GPU": ("fp32", "fp16"), "CPU": ("fp32", "fp16")}


def _supported_text() -> str:
    return "; ".join(f"{backend}: {', '.join(p)}" for backend, p in SUPPORTED.items())


def resolve_precision(precision: Union[str, Mapping[str, str]],
                      device_target: Optional[str] = None) -> str:
    """The precision a run uses on ``device_target`` (default: the context's backend).

    ``precision`` is one name for every backend or a mapping by backend (a recipe states its
    source's Ascend precision and keeps fp32 on CPU: ``{Ascend: fp16, CPU: fp32}``); a backend
    missing from the mapping runs fp32. A combination the backend cannot run is refused here,
    before anything is built, with the list of those that work.
    """
    device_target = device_target or ms.get_context("device_target")
    if isinstance(precision, Mapping):
        unknown = sorted(set(precision) - set(SUPPORTED))
        if unknown:
            raise ValueError(f"runner.precision: unknown backend(s) {unknown}; "
                             f"valid: {sorted(SUPPORTED)}")
        precision = precision.get(device_target, "fp32")
    if precision not in ("fp32", *DTYPES):
        raise ValueError(f"runner.precision must be fp32, fp16 or bf16, got {precision!r}")
    if device_target in SUPPORTED and precision not in SUPPORTED[device_target]:
        raise ValueError(f"runner.precision {precision} does not run on {device_target} in "
                         f"MindSpore {ms.__version__} (no {precision} MatMul/LayerNorm kernels "
                         f"there); supported: {_supported_text()}")
    return precision


def cast_compute(model: nn.Cell, precision: str) -> None:
    """Run ``model``'s Dense/Conv compute in ``precision`` (AMP's white list); norms in fp32."""
    if precision == "fp32":
        return
    dtype = DTYPES[precision]
    for _, cell in model.cells_and_names():
        if isinstance(cell, (nn.Dense, nn.Conv2d)):
            cell.to_float(dtype)
        elif isinstance(cell, (nn.BatchNorm2d, nn.LayerNorm)):
            cell.to_float(ms.float32)


class LossScale(nn.Cell):
    """The loss scale of a low-precision run, as checkpointed state.

    ``construct(finite)`` is called once per step with whether the unscaled gradients are all
    finite (the step applies them only then). Dynamic (``window > 0``): a non-finite step
    divides the scale by ``factor`` (not below 1) and restarts the count of clean steps;
    ``window`` clean steps in a row multiply it by ``factor``. Static (``window == 0``): the
    scale stays; non-finite steps are still skipped. ``skipped_steps`` counts skipped steps.
    """

    def __init__(self, init: float, factor: float = 2.0, window: int = 2000):
        super().__init__()
        if init <= 0 or factor <= 1 or window < 0:
            raise ValueError(f"loss scale: need init > 0, factor > 1 and window >= 0, got "
                             f"init={init}, factor={factor}, window={window}")
        self.value = Parameter(Tensor(float(init), ms.float32), name="loss_scale",
                               requires_grad=False)
        self.clean_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_clean_steps",
                                    requires_grad=False)
        self.skipped_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_skipped_steps",
                                       requires_grad=False)
        self.factor = float(factor)
        self.window = int(window)

    @property
    def dynamic(self) -> bool:
        return self.window > 0

    def construct(self, finite):
        skipped = ops.assign_add(self.skipped_steps, (~finite).astype(ms.int32))
        if self.window == 0:
            return ops.depend(finite, skipped)
        clean = ops.select(finite, self.clean_steps + 1, ops.zeros_like(self.clean_steps))
        grow = clean >= self.window
        scale = ops.select(finite, ops.select(grow, self.value * self.factor, self.value),
                           ops.maximum(self.value / self.factor, ops.ones_like(self.value)))
        done = ops.assign(self.value, scale)
        done = ops.depend(done, ops.assign(self.clean_steps,
                                           ops.select(grow, ops.zeros_like(clean), clean)))
        return ops.depend(finite, ops.depend(done, skipped))

    def state(self) -> Dict[str, float]:
        """The values logged per step (named apart from the ``loss_<term>`` columns)."""
        return {"amp_scale": float(self.value.asnumpy()),
                "amp_skipped_steps": int(self.skipped_steps.asnumpy()),
                "amp_clean_steps": int(self.clean_steps.asnumpy())}


def build_loss_scale(runner_cfg: Dict[str, Any], precision: str):
    """The run's :class:`LossScale`, or None where no scaling is needed (fp32, bf16: bf16 has
    fp32's exponent range). ``runner.loss_scale`` is ``dynamic`` or a fixed number."""
    if precision != "fp16":
        return None
    setting = runner_cfg["loss_scale"]
    if isinstance(setting, str):
        if setting != "dynamic":
            raise ValueError(f"runner.loss_scale must be 'dynamic' or a number, got {setting!r}")
        return LossScale(float(runner_cfg["loss_scale_init"]),
                         float(runner_cfg["loss_scale_factor"]),
                         int(runner_cfg["loss_scale_window"]))
    return LossScale(float(setting), window=0)


def all_finite(grads) -> Tensor:
    """One bool: every element of every gradient is finite."""
    return ops.stack([ops.isfinite(g).all() for g in grads]).all()
