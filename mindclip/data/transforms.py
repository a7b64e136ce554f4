"""Image preprocessing identical to open_clip's evaluation transform, in PIL + numpy.

Resize the shortest side to ``image_size`` with bicubic filtering, center-crop, convert to
RGB, scale to [0, 1], normalise with OpenAI's mean/std, HWC -> CHW. Sizes and crop offsets
are computed the way torchvision computes them, so the result equals open_clip's
preprocessing exactly.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..normalization import OPENAI_MEAN, OPENAI_STD, PreprocessCfg


def to_pil(image: Union[str, Image.Image, np.ndarray]) -> Image.Image:
    """Open a path, or wrap an HWC/HW uint8 array, as a PIL image; anything else, or a file
    that is not a readable image, is an error naming it."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC or HW, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"numpy images must be HWC (1, 3 or 4 channels) or HW, got shape {image.shape}")
        return Image.fromarray(image)
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"an image is a file path, a PIL image or a uint8 numpy array, not a "
                        f"{type(image).__name__}")
    if not os.path.isfile(image):
        raise FileNotFoundError(f"image file not found: {image}")
    try:
        with Image.open(image) as img:
            img.load()
            return img
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {image}: {exc}") from None


INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_shortest(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), INTERPOLATIONS[interpolation])


def resize_longest_and_pad(img: Image.Image, size: int, interpolation: str = "bicubic",
                           fill_color: int = 0) -> Image.Image:
    """open_clip's ``resize_mode: longest``: the longest side to ``size`` (rounded as its
    ``ResizeKeepRatio``), then padding with ``fill_color`` to a centred square."""
    w, h = img.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((new_w, new_h), INTERPOLATIONS[interpolation])
    canvas = Image.new(img.mode, (size, size), (fill_color,) * len(img.getbands()))
    canvas.paste(img, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w < size or h < size:  # only possible for tiny inputs: pad like torchvision
        canvas = Image.new(img.mode, (max(w, size), max(h, size)))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _normalizer(mean: Sequence[float], std: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """HWC uint8 -> CHW float32 scaled to [0, 1] and normalised."""
    mean_arr = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std_arr = np.asarray(std, np.float32).reshape(3, 1, 1)

    def normalize(hwc: np.ndarray) -> np.ndarray:
        return (hwc.astype(np.float32).transpose(2, 0, 1) / 255.0 - mean_arr) / std_arr

    return normalize


def model_transform(model) -> Callable[..., np.ndarray]:
    """The eval transform of a model's weights: its image size and preprocessing record."""
    return image_transform(model.image_size, preprocess=model.preprocess)


def image_transform(image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                    std: Sequence[float] = OPENAI_STD, interpolation: str = "bicubic",
                    resize_mode: str = "shortest", fill_color: int = 0,
                    preprocess: Optional[PreprocessCfg] = None) -> Callable[..., np.ndarray]:
    """Eval transform: image (path, PIL or uint8 array) -> float32 CHW array, with open_clip's
    ``resize_mode`` (``shortest`` side + center crop, ``squash`` to a square, ``longest``
    side + padding with ``fill_color``) and ``interpolation`` (``bicubic``, ``bilinear``,
    ``nearest``); ``preprocess`` (a model's record) gives all of them at once."""
    pp = preprocess or PreprocessCfg(mean, std, interpolation, resize_mode, fill_color)
    mean, std, interpolation, resize_mode = pp.mean, pp.std, pp.interpolation, pp.resize_mode
    normalize = _normalizer(mean, std)

    def resize(img: Image.Image) -> Image.Image:
        if resize_mode == "squash":
            return img.resize((image_size, image_size), INTERPOLATIONS[interpolation])
        if resize_mode == "longest":
            return resize_longest_and_pad(img, image_size, interpolation, pp.fill_color)
        return center_crop(resize_shortest(img, image_size, interpolation), image_size)

    def transform(image) -> np.ndarray:
        return normalize(np.asarray(resize(to_pil(image)).convert("RGB")))

    return transform


CROP_ATTEMPTS = 10


@dataclass
class Augment:
    """Training augmentation, applied in this order (MoCo v2 / DeCLIP's order):

    - RandomResizedCrop with area ``scale`` (open_clip: 0.9-1; DeCLIP: 0.2-1), or the
      deterministic shortest-side resize + center crop when ``random_crop`` is False
      (run_clip.py trains that way);
    - with probability ``color_jitter_prob``, torchvision's ColorJitter: brightness,
      contrast and saturation factors from [1 - s, 1 + s] (``color_jitter``) and a hue shift
      from [-hue, hue], applied in a random order;
    - grayscale with probability ``grayscale``;
    - PIL Gaussian blur with a radius from ``blur_sigma`` with probability ``blur_prob``;
    - horizontal flip with probability ``hflip``.
    """

    scale: Tuple[float, float] = (0.9, 1.0)
    color_jitter: float = 0.0
    grayscale: float = 0.0
    random_crop: bool = True
    hue: float = 0.0
    color_jitter_prob: float = 1.0
    blur_prob: float = 0.0
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.0

    @classmethod
    def from_config(cls, cfg: Optional[dict]) -> "Augment":
        """From a run config's ``train_dataset.augment``; null values keep the defaults."""
        kinds = {f.name: type(f.default) for f in dataclasses.fields(cls)}
        return cls(**{k: kinds[k](v) for k, v in (cfg or {}).items() if v is not None})

    @property
    def recolors(self) -> bool:
        return (self.color_jitter > 0 or self.hue > 0 or self.grayscale > 0
                or self.blur_prob > 0 or self.hflip > 0)


def augment_draws(rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Random numbers for one sample, drawn before the image size is known:
    ``CROP_ATTEMPTS`` rows of (area fraction, log aspect ratio, x, y in [0, 1]) for the crop,
    then (brightness, contrast, saturation factors, grayscale flag), then (hue shift,
    jitter flag, blur radius or 0, flip flag), then the jitter order. Draws are appended in
    that order, so a config without the later options sees the same earlier numbers."""
    draws = np.empty((CROP_ATTEMPTS + 3, 4), np.float32)
    draws[:CROP_ATTEMPTS, 0] = rng.uniform(aug.scale[0], aug.scale[1], CROP_ATTEMPTS)
    draws[:CROP_ATTEMPTS, 1] = rng.uniform(math.log(3 / 4), math.log(4 / 3), CROP_ATTEMPTS)
    draws[:CROP_ATTEMPTS, 2:] = rng.uniform(0, 1, (CROP_ATTEMPTS, 2))
    s = aug.color_jitter
    color = CROP_ATTEMPTS
    draws[color, :3] = rng.uniform(max(0.0, 1 - s), 1 + s, 3)
    draws[color, 3] = float(rng.uniform() < aug.grayscale)
    hue = rng.uniform(-aug.hue, aug.hue) if aug.hue > 0 else 0.0
    jitter = float(rng.uniform() < aug.color_jitter_prob)
    blur = rng.uniform(*aug.blur_sigma) if rng.uniform() < aug.blur_prob else 0.0
    flip = float(rng.uniform() < aug.hflip)
    draws[color + 1] = (hue, jitter, blur, flip)
    draws[color + 2] = rng.permutation(4)
    return draws


def _adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """torchvision's PIL hue adjustment: rotate the HSV hue channel by ``shift`` turns."""
    h, s, v = img.convert("HSV").split()
    # shift * 255 truncated toward zero, added modulo 256 (torchvision's uint8 overflow)
    h = Image.fromarray(((np.asarray(h, np.int32) + int(shift * 255)) % 256).astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def apply_color(image: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Color jitter in the drawn order, grayscale, blur and flip of a uint8 HWC image with the
    numbers of :func:`augment_draws`, through the PIL operations torchvision applies to PIL
    images (so the result is torchvision's for the same numbers)."""
    from PIL import ImageEnhance, ImageFilter

    color = CROP_ATTEMPTS
    brightness, contrast, saturation, gray = (float(v) for v in draws[color])
    hue, jitter, blur, flip = (float(v) for v in draws[color + 1])
    img = Image.fromarray(image)
    if jitter:
        enhancers = {0: (ImageEnhance.Brightness, brightness), 1: (ImageEnhance.Contrast, contrast),
                     2: (ImageEnhance.Color, saturation)}
        for op in draws[color + 2].astype(int):
            if op in enhancers:
                enhancer, factor = enhancers[op]
                if factor != 1:
                    img = enhancer(img).enhance(factor)
            elif hue:
                img = _adjust_hue(img, hue)
    if gray:
        img = img.convert("L").convert("RGB")
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(radius=blur))
    out = np.asarray(img)
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def apply_crop(image: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """torchvision's RandomResizedCrop box rule on pre-drawn numbers; returns the crop."""
    h, w = image.shape[:2]
    for area_frac, log_ratio, u, v in draws[:CROP_ATTEMPTS]:
        aspect = math.exp(float(log_ratio))
        cw = int(round(math.sqrt(w * h * float(area_frac) * aspect)))
        ch = int(round(math.sqrt(w * h * float(area_frac) / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left = min(int(float(u) * (w - cw + 1)), w - cw)
            top = min(int(float(v) * (h - ch + 1)), h - ch)
            return np.ascontiguousarray(image[top:top + ch, left:left + cw])
    ratio = w / h  # fallback: the largest central crop within the aspect bounds
    cw, ch = (w, int(round(w * 3 / 4))) if ratio < 3 / 4 else \
        ((int(round(h * 4 / 3)), h) if ratio > 4 / 3 else (w, h))
    left, top = (w - cw) // 2, (h - ch) // 2
    return np.ascontiguousarray(image[top:top + ch, left:left + cw])


def train_transform(image_size: int, augment: Optional[Augment] = None,
                    preprocess: PreprocessCfg = PreprocessCfg(),
                    seed: Optional[int] = None) -> Callable[..., np.ndarray]:
    """open_clip's training transform in PIL: RandomResizedCrop (``augment.scale``, default
    0.9-1) with bicubic resampling whatever the record's resize mode (as open_clip's),
    optional color augmentation, normalise with the record's mean and std. ``seed`` makes
    it reproducible. (The training loader applies the same rule with C++ resizing.)"""
    augment = augment or Augment()
    rng = np.random.default_rng(seed)
    normalize = _normalizer(preprocess.mean, preprocess.std)

    def transform(image) -> np.ndarray:
        draws = augment_draws(rng, augment)
        crop = apply_crop(np.asarray(to_pil(image).convert("RGB")), draws)
        img = np.asarray(Image.fromarray(crop).resize((image_size, image_size), Image.BICUBIC))
        if augment.recolors:
            img = apply_color(img, draws)
        return normalize(img)

    return transform
