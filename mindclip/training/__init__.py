"""Training: optimizer, LR schedules, the jitted train step, checkpoints and the runner."""
from .lr import constant_schedule, cosine_schedule
from .optim import AdamW, no_weight_decay
from .train_step import TrainStep

__all__ = ["AdamW", "TrainStep", "constant_schedule", "cosine_schedule", "no_weight_decay"]
