"""WebDataset tar shards as LAION ships them, from any place :mod:`.shards` reads.

A sample is the group of tar members sharing a key (``00001.jpg``, ``00001.txt``,
``00001.json``); the image is the first of jpg/jpeg/png/webp present, the caption the txt.
"""
from __future__ import annotations

import glob
import re
from typing import Iterator, List, Optional, Sequence, Tuple

from ..registry import register
from .base import StreamingImageTextSource
from .shards import ShardError, is_local, missing_local, shard_samples

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_pattern(pattern: str) -> List[str]:
    """``/data/{00000..00002}.tar`` -> the three paths (zero padding kept); ``::`` joins
    several patterns; globs of local paths are expanded too. URLs and ``pipe:`` commands
    expand the same way (``pipe:aws s3 cp s3://b/{00000..00099}.tar -``)."""
    out: List[str] = []
    for part in pattern.split("::"):
        match = _BRACE.search(part)
        if match:
            lo, hi = match.group(1), match.group(2)
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                out += expand_pattern(part[:match.start()] + str(i).zfill(width) + part[match.end():])
        elif is_local(part) and any(ch in part for ch in "*?["):
            out += sorted(glob.glob(part))
        else:
            out.append(part)
    return out


def iterate_shards(shards: Sequence[str]) -> Iterator[Tuple[Optional[bytes], List[str], str]]:
    """Yield ``(image_bytes or None, [caption], key)``; a sample without an image or caption
    yields ``None`` bytes so that the loader counts it as skipped; a shard that fails yields
    ``(None, [], ShardError)`` (which names it) after the samples read before the failure."""
    for item in shard_samples(shards):
        if isinstance(item, ShardError):
            yield None, [], item
            continue
        key, parts = item
        image = next((parts[k] for k in IMAGE_KEYS if k in parts), None)
        caption = parts.get("txt", b"").decode("utf-8", errors="replace").strip()
        yield (image if caption else None), ([caption] if caption else []), key


@register("dataset", "webdataset")
def read_webdataset(path: str, train_num_samples: Optional[int] = None, resampled: bool = False,
                    **_) -> StreamingImageTextSource:
    """Shards from a brace pattern of paths or URLs; ``train_num_samples`` sets the epoch size
    (required for training from remote shards, as tar shards carry no count: open_clip's
    rule; local shards are counted when it is not given)."""
    shards = expand_pattern(path)
    missing = set(missing_local(shards))
    present = [s for s in shards if s not in missing]
    if not present:
        raise FileNotFoundError(f"WebDataset shards not found: {sorted(missing)[:3] or path}. Expected "
                                "tar files like /data/{00000..00099}.tar holding KEY.jpg + KEY.txt")
    if train_num_samples is None:
        if not all(is_local(s) for s in present):
            raise ValueError(f"train_dataset.train_num_samples is needed for remote shards ({present[0]}): "
                             "the epoch size, as tar shards carry no count")
        train_num_samples = sum(not isinstance(key, ShardError) for *_, key in iterate_shards(present))
    # a missing shard is skipped and named; the dataset's max_skip_fraction bounds how many
    return StreamingImageTextSource(present, iterate_shards, int(train_num_samples), resampled,
                                    invalid=[f"{s}: shard not found" for s in shards if s in missing])
