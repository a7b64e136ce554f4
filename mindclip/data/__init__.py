"""Data: dataset readers (one module per on-disk format), transforms and loaders."""
from . import benchmark_wds, captions, classification, webdataset  # noqa: F401  (registers the readers)
from .base import ImageTextSource, LabeledImageSource, StreamingImageTextSource
from .loader import Loader, all_captions, build_source, decode_rgb, eval_image_loader, train_loader
from .transforms import OPENAI_MEAN, OPENAI_STD, image_transform, train_transform

__all__ = ["ImageTextSource", "LabeledImageSource", "StreamingImageTextSource", "Loader",
           "all_captions", "build_source", "decode_rgb", "eval_image_loader", "train_loader",
           "OPENAI_MEAN", "OPENAI_STD", "image_transform", "train_transform"]
