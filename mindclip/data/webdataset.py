"""WebDataset tar shards as LAION ships them, read with the standard library.

A sample is the group of tar members sharing a key (``00001.jpg``, ``00001.txt``,
``00001.json``); the image is the first of jpg/jpeg/png/webp present, the caption the txt.
"""
from __future__ import annotations

import glob
import os
import re
import tarfile
from typing import Iterator, List, Optional, Sequence, Tuple

from ..registry import register
from .base import StreamingImageTextSource

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_pattern(pattern: str) -> List[str]:
    """``/data/{00000..00002}.tar`` -> the three paths (zero padding kept); ``::`` joins
    several patterns; plain globs are expanded too."""
    out: List[str] = []
    for part in pattern.split("::"):
        match = _BRACE.search(part)
        if match:
            lo, hi = match.group(1), match.group(2)
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                out += expand_pattern(part[:match.start()] + str(i).zfill(width) + part[match.end():])
        elif any(ch in part for ch in "*?["):
            out += sorted(glob.glob(part))
        else:
            out.append(part)
    return out


def iterate_shards(shards: Sequence[str]) -> Iterator[Tuple[Optional[bytes], List[str], str]]:
    """Yield ``(image_bytes or None, [caption], key)``; a sample without an image or caption
    yields ``None`` bytes so that the loader counts it as skipped."""
    for shard in shards:
        current_key, parts = None, {}
        try:
            with tarfile.open(shard, "r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = os.path.basename(member.name)
                    if "." not in base:
                        continue
                    key = os.path.join(os.path.dirname(member.name), base.split(".", 1)[0])
                    ext = base.split(".", 1)[1].lower()
                    if key != current_key:
                        if current_key is not None:
                            yield _sample(current_key, parts)
                        current_key, parts = key, {}
                    parts[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            # A damaged shard ends early; what was read stays, the rest counts as skipped.
            yield None, [], f"{shard}: {exc}"
        if current_key is not None:
            yield _sample(current_key, parts)


def _sample(key: str, parts: dict) -> Tuple[Optional[bytes], List[str], str]:
    image = next((parts[k] for k in IMAGE_KEYS if k in parts), None)
    caption = parts.get("txt", b"").decode("utf-8", errors="replace").strip()
    return (image if caption else None), ([caption] if caption else []), key


@register("dataset", "webdataset")
def read_webdataset(path: str, train_num_samples: Optional[int] = None, resampled: bool = False,
                    **_) -> StreamingImageTextSource:
    """Shards from a brace pattern; ``train_num_samples`` sets the epoch size (required for
    training, as tar shards carry no count: open_clip's rule)."""
    shards = expand_pattern(path)
    missing = [s for s in shards if not os.path.isfile(s)]
    present = [s for s in shards if os.path.isfile(s)]
    if not present:
        raise FileNotFoundError(f"WebDataset shards not found: {missing[:3] or path}. Expected "
                                "tar files like /data/{00000..00099}.tar holding KEY.jpg + KEY.txt")
    if train_num_samples is None:
        train_num_samples = sum(1 for _ in iterate_shards(present))
    # a missing shard is skipped and named; the dataset's max_skip_fraction bounds how many
    return StreamingImageTextSource(present, iterate_shards, int(train_num_samples), resampled,
                                    invalid=[f"{s}: shard not found" for s in missing])
