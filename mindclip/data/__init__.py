"""Data: image transforms (datasets and pipelines build on these)."""
from .transforms import OPENAI_MEAN, OPENAI_STD, image_transform, train_transform

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "image_transform", "train_transform"]
