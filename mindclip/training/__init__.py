"""Training: optimizer, LR schedules, the jitted train step, checkpoints and the trainer."""
from .lr import constant_schedule, cosine_schedule
from .optim import AdamW, no_weight_decay
from .train_step import TrainStep, lock_image_tower, lock_text_tower

__all__ = ["AdamW", "TrainStep", "constant_schedule", "cosine_schedule", "lock_image_tower",
           "lock_text_tower", "no_weight_decay"]
