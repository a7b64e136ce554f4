"""Learning-rate schedules, precomputed per optimizer step (open_clip's formulas)."""
from __future__ import annotations

import math

import numpy as np

from ..registry import register


def _warmup(base_lr: float, warmup_steps: int, step: int, start: float = 0.0) -> float:
    return start + (base_lr - start) * (step + 1) / warmup_steps


def _warmup_then(base_lr: float, total_steps: int, warmup_steps: int, decay,
                 start: float = 0.0) -> np.ndarray:
    """Linear warmup from ``start``, then ``decay(progress)`` with progress 0 -> 1 after it."""
    out = np.empty(total_steps, np.float32)
    decay_steps = max(total_steps - warmup_steps, 1)
    for step in range(total_steps):
        if step < warmup_steps:
            out[step] = _warmup(base_lr, warmup_steps, step, start)
        else:
            out[step] = decay((step - warmup_steps) / decay_steps)
    return out


@register("lr_schedule", "cosine")
def cosine_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0,
                    min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> np.ndarray:
    """Linear warmup from ``warmup_start_lr`` (open_clip: 0; DeCLIP: its base lr 1e-4 up to
    a peak of 1e-3), then cosine decay from ``base_lr`` to ``min_lr`` at ``total_steps``."""
    return _warmup_then(base_lr, total_steps, warmup_steps, lambda progress: min_lr + 0.5 * (
        1 + math.cos(math.pi * progress)) * (base_lr - min_lr), warmup_start_lr)


@register("lr_schedule", "linear")
def linear_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0,
                    min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> np.ndarray:
    """Linear warmup, then linear decay to ``min_lr`` at ``total_steps`` (Hugging Face's
    ``get_linear_schedule_with_warmup``, the Trainer's default)."""
    return _warmup_then(base_lr, total_steps, warmup_steps,
                        lambda progress: min_lr + (base_lr - min_lr) * (1.0 - progress),
                        warmup_start_lr)


@register("lr_schedule", "constant")
def constant_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0,
                      min_lr: float = 0.0, warmup_start_lr: float = 0.0) -> np.ndarray:
    """Linear warmup, then ``base_lr`` throughout (``min_lr`` is unused)."""
    del min_lr
    return np.array([_warmup(base_lr, warmup_steps, s, warmup_start_lr) if s < warmup_steps
                     else base_lr for s in range(total_steps)], np.float32)
