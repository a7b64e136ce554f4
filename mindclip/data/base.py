"""What every dataset reader returns: image references with captions or labels."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

ImageRef = Union[str, Callable[[], bytes], np.ndarray]  # path, bytes loader, or HWC uint8 array


def read_image_bytes(ref: ImageRef) -> bytes:
    if callable(ref):
        return ref()
    with open(ref, "rb") as f:
        return f.read()


def require_path(path: str, what: str, layout: str) -> str:
    """Fail early, naming the path and the layout expected, when ``path`` does not exist."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path!r}. Expected layout: {layout}")
    return path


def json_lines(path: str, layout: str, parse: Callable[[dict], Any]) -> Tuple[List[Any], List[str]]:
    """``(parsed, invalid)``: ``parse(record)`` of every non-blank line of a JSON-lines file,
    and ``file:line`` of each line that is not JSON or that ``parse`` cannot read (missing key,
    wrong type), which is skipped (the dataset's ``max_skip_fraction`` bounds how many)."""
    out, invalid = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError):
                invalid.append(f"{path}:{n}: expected {layout}")
    return out, invalid


def check_skip_fraction(source: Any, max_fraction: float) -> None:
    """Refuse a dataset whose records failed to read (``source.invalid``) beyond
    ``max_fraction`` of all of them, naming the first ones."""
    invalid = getattr(source, "invalid", None) or []
    total = getattr(source, "record_count", len(source)) + len(invalid)
    if total and len(invalid) / total > max_fraction:
        raise ValueError(f"{getattr(source, 'name', 'dataset')}: {len(invalid)} of {total} records "
                         f"cannot be read (more than max_skip_fraction {max_fraction}); first: "
                         + "; ".join(invalid[:3]))


@dataclass
class ImageTextSource:
    """Indexable image-caption pairs; an image may carry several captions."""

    images: List[ImageRef]
    captions: List[List[str]]
    name: str = "image-text"
    invalid: List[str] = field(default_factory=list)  # records skipped when read, named

    def __post_init__(self):
        if len(self.images) != len(self.captions):
            raise ValueError("images and captions differ in length")
        for i, caps in enumerate(self.captions):
            if not caps:
                raise ValueError(f"{self.name}: sample {i} ({self.images[i]}) has no caption")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: Optional[int]) -> "ImageTextSource":
        if n is None or n >= len(self):
            return self
        return ImageTextSource(self.images[:n], self.captions[:n], self.name, self.invalid)


@dataclass
class LabeledImageSource:
    """Indexable images with integer labels and the class names they index."""

    images: List[ImageRef]
    labels: List[int]
    class_names: List[str]
    name: str = "classification"
    invalid: List[str] = field(default_factory=list)  # records skipped when read, named
    templates: Optional[List[str]] = None  # the dataset's own zero-shot templates, when it has them
    # per-sample integer metadata (N, fields), e.g. WILDS' region/year, Dollar Street's income
    # group: what group metrics (worst-group accuracy) group by
    metadata: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: Optional[int]) -> "LabeledImageSource":
        if n is None or n >= len(self):
            return self
        return LabeledImageSource(self.images[:n], self.labels[:n], self.class_names, self.name,
                                  self.invalid, self.templates,
                                  None if self.metadata is None else self.metadata[:n])


@dataclass
class StreamingImageTextSource:
    """Image-caption pairs read as a stream of shards (WebDataset).

    ``iterate(shards)`` yields ``(image_bytes_or_None, captions, key)`` from the given shard
    paths; ``num_samples`` is the nominal epoch size (``train_num_samples``).
    """

    shards: List[str]
    iterate: Callable[[Sequence[str]], Iterator[Tuple[Optional[bytes], List[str], str]]]
    num_samples: int
    resampled: bool = False
    name: str = "webdataset"
    invalid: List[str] = field(default_factory=list)  # shards missing when read, named

    def __len__(self) -> int:
        return self.num_samples

    @property
    def record_count(self) -> int:
        """What ``invalid`` counts against: shards."""
        return len(self.shards)
