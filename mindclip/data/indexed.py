"""JSON-lines annotation files too large to load (YFCC15M: 15 M lines), read by seeking.

The byte offset of every non-blank line is found once, with a chunked scan for newlines, and
cached as ``<file>.index.npz`` beside the file (or under ``$MINDCLIP_HOME/index/`` when that
folder is read-only) together with the file's size and modification time, so a changed file
is re-indexed. A sample is then one ``seek`` + ``readline``; memory holds 8 bytes a line.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .base import ImageTextSource

_CHUNK = 1 << 26


def _cache_paths(path: str) -> List[str]:
    home = os.environ.get("MINDCLIP_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "mindclip")
    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8")).hexdigest()[:16]
    return [path + ".index.npz", os.path.join(home, "index", f"{digest}.npz")]


def _scan_offsets(path: str) -> np.ndarray:
    starts, position, previous = [], 0, b"\n"
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            data = np.frombuffer(chunk, np.uint8)
            newlines = np.flatnonzero(data == 10)
            if previous == b"\n":
                starts.append(np.array([position], np.int64))
            starts.append(newlines[newlines < len(data) - 1].astype(np.int64) + position + 1)
            previous = chunk[-1:]
            position += len(chunk)
    offsets = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    return offsets[offsets < position]


def _non_blank(path: str, offsets: np.ndarray) -> np.ndarray:
    if not len(offsets):
        return offsets
    first = np.memmap(path, np.uint8, mode="r")[offsets]
    return offsets[(first != 10) & (first != 13)]


def line_offsets(path: str) -> np.ndarray:
    """Byte offsets of the non-blank lines of ``path``, from the cache when it is current."""
    stat = os.stat(path)
    stamp = np.array([stat.st_size, stat.st_mtime_ns], np.int64)
    for cache in _cache_paths(path):
        if os.path.isfile(cache):
            with np.load(cache) as data:
                if np.array_equal(data["stamp"], stamp):
                    return data["offsets"]
    offsets = _non_blank(path, _scan_offsets(path))
    for cache in _cache_paths(path):
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.tmp.npz"
            np.savez(tmp, offsets=offsets, stamp=stamp)
            os.replace(tmp, cache)
            break
        except OSError:
            continue
    return offsets


class JsonLines(Sequence):
    """Random access to the parsed lines of a JSON-lines file (thread-safe)."""

    def __init__(self, path: str, offsets: Optional[np.ndarray] = None):
        self.path = path
        self.offsets = line_offsets(path) if offsets is None else offsets
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = open(self.path, "rb")
        handle.seek(int(self.offsets[index]))
        line = handle.readline()
        try:
            return json.loads(line)
        except ValueError:
            raise ValueError(f"{self.path}: line at byte {int(self.offsets[index])} is not "
                             f"JSON: {line[:80]!r}") from None

    def head(self, n: int) -> "JsonLines":
        return JsonLines(self.path, self.offsets[:n])


class _Column(Sequence):
    def __init__(self, rows: JsonLines, get):
        self.rows, self.get = rows, get

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.get(self.rows[index])


class IndexedImageTextSource(ImageTextSource):
    """An :class:`ImageTextSource` over a JSON-lines file, read line by line on demand.

    ``captions[i]`` is a list (a string caption becomes a one-element list); an empty one
    makes the training loader skip the sample and count it, as it does unreadable images.
    """

    def __init__(self, rows: JsonLines, image_key: str, caption_key: str, image_root: str,
                 name: str):
        def image(row):
            # DeCLIP's joinpath: the name is always under the root, a leading "/" included
            return os.path.join(image_root, row[image_key].lstrip("/"))

        def captions(row):
            value = row.get(caption_key) or []
            value = [value] if isinstance(value, str) else list(value)
            return [c.strip() for c in value if c and c.strip()]

        self.rows, self.keys, self.image_root = rows, (image_key, caption_key), image_root
        super().__init__(_Column(rows, image), _Column(rows, captions), name)

    def __post_init__(self):
        pass  # validating every line would read the whole file

    def subset(self, n: Optional[int]) -> "IndexedImageTextSource":
        if n is None or n >= len(self):
            return self
        return IndexedImageTextSource(self.rows.head(n), *self.keys, self.image_root, self.name)
