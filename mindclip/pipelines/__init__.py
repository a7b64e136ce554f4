"""Inference pipelines in MindFormers' / Hugging Face's shape: ``pipeline(task, model=...)``."""
from typing import Any

from ..registry import get, names
from .feature_extraction import FeatureExtractionPipeline
from .image_text_retrieval import ImageTextRetrievalPipeline
from .zero_shot_image_classification import ZeroShotImageClassificationPipeline


def pipeline(task: str, model: Any = None, **kwargs: Any):
    """Build the pipeline registered as ``task`` (see ``mindclip.registry.names("pipeline")``).

    ``model`` is an architecture name, a converted checkpoint file/folder, or a model of any
    family.
    """
    try:
        cls = get("pipeline", task)
    except KeyError:
        raise ValueError(f"unknown pipeline task {task!r}; valid: {names('pipeline')}") from None
    return cls(model, **kwargs)


__all__ = ["pipeline", "FeatureExtractionPipeline", "ImageTextRetrievalPipeline",
           "ZeroShotImageClassificationPipeline"]
