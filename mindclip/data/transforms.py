"""Image preprocessing identical to open_clip's evaluation transform, in PIL + numpy.

Resize the shortest side to ``image_size`` with bicubic filtering, center-crop, convert to
RGB, scale to [0, 1], normalise with OpenAI's mean/std, HWC -> CHW. Sizes and crop offsets
are computed the way torchvision computes them, so the result equals open_clip's
preprocessing exactly.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pil(image: Union[str, Image.Image, np.ndarray]) -> Image.Image:
    """Open a path, or wrap an HWC/HW uint8 array, as a PIL image."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC or HW, got {image.dtype}")
        return Image.fromarray(image)
    with Image.open(image) as img:
        img.load()
        return img


def resize_shortest(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), Image.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w < size or h < size:  # only possible for tiny inputs: pad like torchvision
        canvas = Image.new(img.mode, (max(w, size), max(h, size)))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def image_transform(image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                    std: Sequence[float] = OPENAI_STD) -> Callable[..., np.ndarray]:
    """Eval transform: image (path, PIL or uint8 array) -> float32 CHW array."""
    mean_arr = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std_arr = np.asarray(std, np.float32).reshape(3, 1, 1)

    def transform(image) -> np.ndarray:
        img = center_crop(resize_shortest(to_pil(image), image_size), image_size).convert("RGB")
        chw = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (chw - mean_arr) / std_arr

    return transform


def random_resized_crop_box(width: int, height: int, scale: Tuple[float, float],
                            ratio: Tuple[float, float], rng: random.Random) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box sampling: ``(left, top, w, h)``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # Fallback: the largest central crop within the ratio bounds.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(image_size: int, scale: Tuple[float, float] = (0.9, 1.0),
                    mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
                    seed: Optional[int] = None) -> Callable[..., np.ndarray]:
    """open_clip's training transform: RandomResizedCrop(scale) with bicubic resampling,
    RGB, normalise. ``seed`` makes the crops reproducible."""
    rng = random.Random(seed)
    mean_arr = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std_arr = np.asarray(std, np.float32).reshape(3, 1, 1)

    def transform(image) -> np.ndarray:
        img = to_pil(image)
        left, top, w, h = random_resized_crop_box(img.size[0], img.size[1], scale,
                                                  (3 / 4, 4 / 3), rng)
        img = img.resize((image_size, image_size), Image.BICUBIC,
                         box=(left, top, left + w, top + h)).convert("RGB")
        chw = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (chw - mean_arr) / std_arr

    return transform
