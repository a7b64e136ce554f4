"""Class names and prompt templates for zero-shot classification.

CIFAR-10/100 follow the CLIP paper's protocol: class names written with spaces and the 18
CIFAR templates. ImageNet-1k's cleaned class names and 80 templates are OpenAI's (MIT,
(c) 2021 OpenAI; published with CLIP's prompt-engineering notebook), stored in
``imagenet_zero_shot.json``.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Union

import yaml

from ..data.classification import DIGIT_NAMES, DIGIT_TEMPLATES

CIFAR100_CLASSNAMES = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow tree", "wolf", "woman", "worm",
]

CIFAR10_CLASSNAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck"]

CIFAR_TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.",
    "a bad photo of the {}.", "a good photo of the {}.", "a photo of the small {}.",
    "a photo of the big {}.",
]


DEFAULT_TEMPLATES = ["a photo of a {}."]


@lru_cache()
def _imagenet() -> Dict[str, List[str]]:
    with open(os.path.join(os.path.dirname(__file__), "imagenet_zero_shot.json"), encoding="utf-8") as f:
        return json.load(f)["imagenet1k"]


def imagenet_classnames() -> List[str]:
    return list(_imagenet()["classnames"])


def imagenet_templates() -> List[str]:
    return list(_imagenet()["templates"])


_PRESETS = {
    "cifar100": (lambda: CIFAR100_CLASSNAMES, lambda: CIFAR_TEMPLATES),
    "cifar10": (lambda: CIFAR10_CLASSNAMES, lambda: CIFAR_TEMPLATES),
    "imagenet1k": (imagenet_classnames, imagenet_templates),
    "digits": (lambda: list(DIGIT_NAMES), lambda: list(DIGIT_TEMPLATES)),
}


def load_class_names(spec: Union[str, Sequence[str], None], default: Optional[Sequence[str]] = None) -> List[str]:
    """Class names from a list, a preset name (``cifar100``...), a ``.txt`` file (one name per
    line) or a YAML/JSON file (a list, or a mapping with ``class_names``)."""
    if spec is None:
        if default is None:
            raise ValueError("no class names given")
        return list(default)
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    if spec in _PRESETS:
        return list(_PRESETS[spec][0]())
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"class names: {spec!r} is neither a preset {sorted(_PRESETS)} "
                                "nor a file")
    with open(spec, encoding="utf-8") as f:
        if spec.endswith((".yaml", ".yml", ".json")):
            data = yaml.safe_load(f)
            data = data.get("class_names", data) if isinstance(data, dict) else data
            return [str(s) for s in data]
        return [line.strip() for line in f if line.strip()]


def load_templates(spec: Union[str, Sequence[str], None], default: Optional[Sequence[str]] = None) -> List[str]:
    """Templates from a list, a preset name, or a file (same formats as class names).
    Each must contain one ``{}`` for the class name."""
    if spec is None:
        templates = list(default or DEFAULT_TEMPLATES)
    elif isinstance(spec, str) and spec in _PRESETS:
        templates = list(_PRESETS[spec][1]())
    elif isinstance(spec, str) and "{}" in spec:
        templates = [spec]
    else:
        templates = load_class_names(spec)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates must contain exactly one '{{}}': {bad}")
    return templates


def preset_for(dataset_type: Optional[str]) -> Optional[str]:
    return dataset_type if dataset_type in _PRESETS else None
