"""CLIP_benchmark's WebDataset layout, the form of every dataset of its suite on the Hugging
Face Hub (``clip-benchmark/wds_<name>``)::

    ROOT/<split>/nshards.txt          number of shards n
    ROOT/<split>/{0..n-1}.tar         KEY.webp|png|jpg|jpeg + KEY.cls (label) or KEY.txt (captions, one per line)
                                      [+ KEY.npy: the sample's integer metadata, WILDS/fairness sets]
    ROOT/classnames.txt               one class name per line (classification)
    ROOT/zeroshot_classification_templates.txt   one template per line, "{c}" for the class
    ROOT/dataset_type.txt             "retrieval" for caption datasets (else classification)

Shards are indexed from their tar headers (:func:`.shards.index_shard`, the grouping rule of
the training reader) and images read by seeking, so evaluation reads them in any order on
several threads and never holds a dataset in memory. A missing or damaged shard, and a sample
without an image or label, is named and counted against ``max_skip_fraction``.
"""
from __future__ import annotations

import io
import os
from typing import List, Optional, Union

import numpy as np

from ..registry import register
from .base import ImageTextSource, LabeledImageSource, require_path
from .shards import index_shard

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order of preference
LAYOUT = ("ROOT/<split>/nshards.txt + ROOT/<split>/{0..n-1}.tar (KEY.webp|png|jpg + KEY.cls or KEY.txt [+ KEY.npy]), "
          "ROOT/classnames.txt, ROOT/zeroshot_classification_templates.txt, ROOT/dataset_type.txt")


def _lines(path: str) -> Optional[List[str]]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()]


def dataset_type(root: str) -> str:
    """``classification`` or ``retrieval`` (or what ``dataset_type.txt`` says otherwise)."""
    kind = _lines(os.path.join(root, "dataset_type.txt"))
    return (kind[0].lower() if kind else "") or "classification"


@register("dataset", "benchmark_wds")
def read_benchmark_wds(path: str, split: str = "test", max_skip_fraction: float = 0.05,
                       **_) -> Union[LabeledImageSource, ImageTextSource]:
    """A dataset in CLIP_benchmark's layout (module docstring): labelled images with the folder's
    class names and templates (None when it has no such file), or images with their captions.

    A shard that is missing or damaged loses an unknown number of samples: beyond
    ``max_skip_fraction`` of the shards the dataset is refused, naming them (a benchmark number
    over part of a dataset is not that dataset's number); below it, each counts as one skipped
    record, named in ``invalid``."""
    require_path(path, "CLIP_benchmark dataset folder", LAYOUT)
    count_file = require_path(os.path.join(path, split, "nshards.txt"), f"split {split!r}", LAYOUT)
    with open(count_file, encoding="utf-8") as f:
        nshards = int(f.read().strip())
    kind = dataset_type(path)
    if kind not in ("classification", "retrieval"):
        raise ValueError(f"{path}: dataset_type {kind!r} is not evaluated by mindclip "
                         "(classification and retrieval are)")
    retrieval = kind == "retrieval"
    images, targets, invalid, damaged, metadata = [], [], [], [], []
    for i in range(nshards):
        shard = os.path.join(path, split, f"{i}.tar")
        if not os.path.isfile(shard):
            damaged.append(f"{shard}: shard not found")
            continue
        samples, error = index_shard(shard)
        if error is not None:
            damaged.append(str(error))
        for key, parts in samples:
            image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
            target = parts.get("txt" if retrieval else "cls")
            if image is None or target is None:
                invalid.append(f"{shard}:{key}: no image" if image is None else
                               f"{shard}:{key}: no .{'txt' if retrieval else 'cls'}")
                continue
            try:
                text = target().decode("utf-8")
                value = text.splitlines() if retrieval else int(text.strip())
                meta = _metadata(parts["npy"]()) if "npy" in parts and not retrieval else None
            except (ValueError, OSError) as exc:
                invalid.append(f"{shard}:{key}: {exc}")
                continue
            if retrieval and not value:
                invalid.append(f"{shard}:{key}: no caption")
                continue
            targets.append(value)
            images.append(image)
            metadata.append(meta)
    if nshards and len(damaged) / nshards > max_skip_fraction:
        raise ValueError(f"{path}: {len(damaged)} of {nshards} shards cannot be read (more than "
                         f"max_skip_fraction {max_skip_fraction}): " + "; ".join(damaged[:3]))
    invalid = damaged + invalid
    name = os.path.basename(os.path.normpath(path))
    if retrieval:
        return ImageTextSource(images, targets, name, invalid)
    names = _lines(os.path.join(path, "classnames.txt"))
    templates = _lines(os.path.join(path, "zeroshot_classification_templates.txt"))
    return LabeledImageSource(images, targets, [n for n in names if n] if names else [], name, invalid,
                              [t for t in templates if t] if templates else None,
                              _stack_metadata(path, metadata))


def _metadata(data: bytes) -> np.ndarray:
    """A sample's ``.npy`` member: a vector of non-negative integers (read without pickle)."""
    value = np.load(io.BytesIO(data), allow_pickle=False)
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.number) or (value < 0).any() \
            or (value != np.round(value)).any():
        raise ValueError(f"metadata .npy is {value.dtype} {value.shape}; expected a vector of "
                         "non-negative integers (group indices)")
    return value.astype(np.int64)


def _stack_metadata(path: str, rows: List[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    """``(N, fields)`` when every sample has metadata of one width, None when none has."""
    present = [r for r in rows if r is not None]
    if not present:
        return None
    widths = {len(r) for r in present}
    if len(present) != len(rows) or len(widths) != 1:
        raise ValueError(f"{path}: {len(present)} of {len(rows)} samples have .npy metadata, of widths "
                         f"{sorted(widths)}: group metrics need one width for every sample")
    return np.stack(present)
