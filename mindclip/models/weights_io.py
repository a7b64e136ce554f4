"""Reading and writing flat weight files (MindSpore ``.ckpt`` and ``.safetensors``).

safetensors is parsed here directly rather than through a framework so that bf16 files
(which numpy cannot represent) load everywhere without torch, and so that the metadata
block (where we record the architecture) is available before any tensor is read.
Every write goes to a temporary file that is renamed into place, so an interrupted
write never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from . import ckpt_stream

METADATA_KEY = "mindclip_config"       # the architecture, as JSON
FAMILY_KEY = "mindclip_family"         # the model family's registry name
TRAIN_STATE_KEY = "mindclip_train_state"  # run position of a training checkpoint
CHECKSUM_KEY = "mindclip_sha256"       # of the tensors as they read back (see tensor_checksum)


class CorruptCheckpointError(ValueError):
    """A weight file whose tensors do not match the checksum written with them, or that
    cannot be parsed at all (truncated, overwritten)."""


def _checksum_header(name: str, dtype: np.dtype, shape: Tuple[int, ...]) -> bytes:
    # a scalar is hashed as shape (1,): np.ascontiguousarray makes 0-d arrays 1-d, and every
    # checksum written so far was taken through it
    return f"{name}|{dtype.str}|{tuple(shape) or (1,)}|".encode()


def _hash_tensor(digest, name: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    digest.update(_checksum_header(name, arr.dtype, arr.shape))
    digest.update(arr.data)


def tensor_checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (one tensor
    read at a time from a lazy mapping)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        _hash_tensor(digest, name, np.asarray(tensors[name]))
    return digest.hexdigest()


def _verified(path: str, tensors: Dict[str, np.ndarray], metadata: Dict[str, str]):
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors) != expected:
        raise CorruptCheckpointError(f"{path} is damaged: its tensors do not match the checksum "
                                     "written with them")
    return tensors, metadata

_ST_TO_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NP_TO_ST = {np.dtype(v): k for k, v in _ST_TO_NP.items()}
_DTYPES = ("fp32", "fp16", "bf16")


def bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits)
    wide = bits.reshape(-1).astype(np.uint32) << np.uint32(16)  # 1-d: a 0-d array has no view
    return wide.view(np.float32).reshape(bits.shape)


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even fp32 -> bf16, returned as the raw uint16 bit pattern."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0
    return out


def atomic_write(path: str, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then atomically rename the result to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class LazyTensor:
    """One tensor of a weight file, read when asked (``np.asarray``, :meth:`load`): conversion
    passes names, shapes and these handles around and reads one tensor at a time, so its
    memory is the largest tensor, not the checkpoint (the converter's streaming path)."""

    def __init__(self, path: str, offset: int, nbytes: int, st_dtype: str, shape: Tuple[int, ...]):
        self.path, self.offset, self.nbytes, self.st_dtype = path, offset, nbytes, st_dtype
        self.shape = tuple(shape)
        # bf16 reads back as fp32 (numpy has no bf16)
        self.dtype = np.dtype(np.float32) if st_dtype == "BF16" else np.dtype(_ST_TO_NP[st_dtype])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __getitem__(self, index):
        return self.load()[index]

    def __getattr__(self, name: str):
        # anything else numpy arrays have (astype, T, ...) reads the tensor
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def load(self) -> np.ndarray:
        # straight into the array (as ckpt_stream reads): one copy out of the page cache, where
        # bytes and then a writeable copy of them made two model-sized allocations
        arr = np.empty(self.shape, np.uint16 if self.st_dtype == "BF16" else self.dtype)
        if arr.nbytes != self.nbytes:
            raise ValueError(f"{self.path}: {self.nbytes} bytes for a tensor of shape {self.shape} "
                             f"({self.st_dtype})")
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            if f.readinto(memoryview(arr.reshape(-1)).cast("B")) != self.nbytes:
                raise CorruptCheckpointError(f"{self.path} is truncated (an interrupted download or copy?)")
        return bf16_bits_to_fp32(arr) if self.st_dtype == "BF16" else arr

    def __array__(self, dtype=None, copy=None):
        arr = self.load()
        return arr if dtype is None else arr.astype(dtype)


def _safetensors_header(path: str) -> Tuple[Dict, int, int]:
    """``(header, start of the data, file size)``, the data's extent checked."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > 100 * 1024 * 1024:
            raise ValueError(f"{path} is not a safetensors file (header length {header_len})")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as exc:
            raise ValueError(f"{path} is not a safetensors file: {exc}") from None
    size = os.path.getsize(path)
    start = 8 + header_len
    end_of_data = max((info["data_offsets"][1] for k, info in header.items() if k != "__metadata__"),
                      default=0)
    if size - start < end_of_data:
        raise CorruptCheckpointError(
            f"{path} is truncated: its header describes {end_of_data} bytes of tensors, the "
            f"file holds {size - start} (an interrupted download or copy?)")
    return header, start, size


def read_safetensors(path: str, lazy: bool = False) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Return ``(tensors, metadata)``; bf16 tensors come back as fp32. ``lazy``: each tensor
    a :class:`LazyTensor` read when used (the checksum, if any, is verified tensor by
    tensor when the file is read eagerly, and by whoever consumes a lazy one)."""
    header, start, _ = _safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "BF16" and info["dtype"] not in _ST_TO_NP:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        tensors[name] = LazyTensor(path, start + begin, end - begin, info["dtype"], info["shape"])
    if lazy:
        return tensors, metadata
    return _verified(path, {k: v.load() for k, v in tensors.items()}, metadata)


def _written_dtype(src_dtype: np.dtype, dtype: str) -> Tuple[np.dtype, str]:
    """The numpy dtype a tensor of ``src_dtype`` is stored as (``dtype`` for floats, bf16 as
    its uint16 bits; integers kept) and its safetensors name."""
    if np.issubdtype(src_dtype, np.floating):
        if dtype == "bf16":
            return np.dtype(np.uint16), "BF16"
        src_dtype = np.dtype(np.float16 if dtype == "fp16" else np.float32)
    return np.dtype(src_dtype), _NP_TO_ST[np.dtype(src_dtype)]


def _stored(arr: np.ndarray, dtype: str) -> Tuple[np.ndarray, bool]:
    """``(array as a file stores it, whether it is bf16 bits)``: floats as ``dtype`` (bf16 as
    its uint16 bits), other dtypes kept; C-contiguous, its shape kept (np.ascontiguousarray
    makes a 0-d array 1-d)."""
    shape = arr.shape
    if np.issubdtype(arr.dtype, np.floating):
        if dtype == "bf16":
            return fp32_to_bf16_bits(arr).reshape(shape), True
        arr = arr.astype(np.float16 if dtype == "fp16" else np.float32, copy=False)
    return np.ascontiguousarray(arr).reshape(shape), False


def _written(arr: np.ndarray, dtype: str) -> Tuple[np.ndarray, str]:
    """The array as stored and its safetensors dtype (see :func:`_written_dtype`)."""
    stored, bf16 = _stored(arr, dtype)
    return stored, "BF16" if bf16 else _NP_TO_ST[stored.dtype]


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write float tensors as ``dtype`` (fp32/fp16/bf16); integer tensors are kept as they are.

    Streams: the header comes from the tensors' shapes and dtypes, then each tensor is read
    (a :class:`LazyTensor` from its file), converted, hashed and written before the next, so
    a conversion holds one tensor at a time; the checksum is patched into the header last."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    names = sorted(tensors)
    header, offset = {}, 0
    for name in names:
        value = tensors[name]
        np_dtype, st_dtype = _written_dtype(np.dtype(value.dtype), dtype)
        nbytes = int(np.prod(value.shape, dtype=np.int64)) * np_dtype.itemsize
        header[name] = {"dtype": st_dtype, "shape": [int(x) for x in value.shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    placeholder = "0" * 64  # sha256 hex, patched in once every tensor is written
    header["__metadata__"] = {**{str(k): str(v) for k, v in (metadata or {}).items()},
                              CHECKSUM_KEY: placeholder}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    where = head.index(f'"{CHECKSUM_KEY}":"{placeholder}"'.encode()) + len(CHECKSUM_KEY) + 4

    def write(tmp):
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for name in names:
                arr, st_dtype = _written(np.asarray(tensors[name]), dtype)
                # hashed as it reads back (bf16 as fp32), as tensor_checksum is verified
                _hash_tensor(digest, name, bf16_bits_to_fp32(arr) if st_dtype == "BF16" else arr)
                f.write(arr.tobytes())
                del arr
            f.seek(8 + where)
            f.write(digest.hexdigest().encode())

    atomic_write(path, write)


def _ckpt_index(f, path: str) -> Dict[str, ckpt_stream.Entry]:
    try:
        return ckpt_stream.index(f, os.fstat(f.fileno()).st_size)
    except ckpt_stream.FormatError as exc:
        raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {path}: {exc}") from None


class CkptReader:
    """A MindSpore ``.ckpt`` opened to read its tensors one at a time, each straight into its
    own array (``with CkptReader(path) as ckpt: ckpt.shapes, ckpt.read(name)``)."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(path, "rb")
        try:
            self.entries = _ckpt_index(self.file, path)
        except BaseException:
            self.file.close()
            raise
        self.shapes = {k: e.shape for k, e in self.entries.items() if e.kind != "str"}

    def __enter__(self) -> "CkptReader":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def metadata(self) -> Dict[str, str]:
        """The string entries (``append_dict``)."""
        return {k: ckpt_stream.read_string(self.file, e) for k, e in self.entries.items()
                if e.kind == "str"}

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` (bfloat16 widened to float32)."""
        entry = self.entries[name]
        try:
            arr = ckpt_stream.read_entry(self.file, entry)
        except ckpt_stream.FormatError as exc:
            raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {self.path}: {exc}") from None
        return bf16_bits_to_fp32(arr) if entry.kind == "BFloat16" else arr


def read_ckpt(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a MindSpore ``.ckpt``; string entries (``append_dict``) are returned as metadata.

    Parsed here (:mod:`ckpt_stream`) rather than by ``ms.load_checkpoint``, which refuses any
    file larger than the machine's *free* pages (page cache does not count as free), or by the
    protobuf reader, which holds the file and its parse beside the tensors. The checksum
    written with the tensors is verified.
    """
    with CkptReader(path) as ckpt:
        tensors = {name: ckpt.read(name) for name in ckpt.shapes}
        metadata = ckpt.metadata()
    return _verified(path, tensors, metadata)


def verify_ckpt(path: str) -> Dict[str, str]:
    """Check a ``.ckpt`` against the checksum written with it, reading its tensors in chunks
    (never one whole: verifying a checkpoint just written costs no memory); returns its string
    metadata. Raises :class:`CorruptCheckpointError` for a damaged file."""
    with CkptReader(path) as ckpt:
        f, entries, metadata = ckpt.file, ckpt.entries, ckpt.metadata()
        expected = metadata.get(CHECKSUM_KEY)
        if expected is None:
            return metadata

        def header(entry):
            dtype = np.dtype(np.float32) if entry.kind == "BFloat16" else ckpt_stream.CKPT_TO_NP.get(entry.kind)
            if dtype is None:
                raise ckpt_stream.FormatError(f"tensor {entry.name!r} has type {entry.kind!r}")
            return _checksum_header(entry.name, dtype, entry.shape)

        digest = hashlib.sha256()
        try:
            ckpt_stream.hash_entries(f, entries, digest, header, widen_bf16=bf16_bits_to_fp32)
        except ckpt_stream.FormatError as exc:
            raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {path}: {exc}") from None
    if digest.hexdigest() != expected:
        raise CorruptCheckpointError(f"{path} is damaged: its tensors do not match the checksum "
                                     "written with them")
    return metadata


def write_ckpt(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
               metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write a MindSpore ``.ckpt`` (``mindspore.load_checkpoint`` reads it) with float tensors
    as ``dtype``, one tensor at a time: each value of ``tensors`` (an array, or anything with
    ``asnumpy()``: a Parameter) is fetched, converted, hashed and written before the next, so
    the memory beyond the tensors is one tensor's conversion; the checksum goes last."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")

    def write(tmp):
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            for name in sorted(tensors):
                value = tensors[name]
                arr, bf16 = _stored(value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value),
                                    dtype)
                # hashed as it reads back (bf16 as fp32), as the checksum is verified
                _hash_tensor(digest, name, bf16_bits_to_fp32(arr) if bf16 else arr)
                ckpt_stream.write_tensor(f, name, arr, "BFloat16" if bf16 else None)
                del arr, value
            for key, text in {**dict(metadata or {}), CHECKSUM_KEY: digest.hexdigest()}.items():
                ckpt_stream.write_string(f, str(key), str(text))

    atomic_write(path, write)


def _weight_format(path: str) -> str:
    """``"safetensors"`` or ``"ckpt"``, by extension, for a file that exists."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    for fmt in ("safetensors", "ckpt"):
        if path.endswith("." + fmt):
            return fmt
    raise ValueError(f"{path}: expected a .ckpt or .safetensors file")


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a ``.ckpt`` or ``.safetensors`` file into numpy arrays plus string metadata."""
    return read_safetensors(path) if _weight_format(path) == "safetensors" else read_ckpt(path)


def read_weight_metadata(path: str) -> Dict[str, str]:
    """The string metadata of a ``.ckpt`` or ``.safetensors`` file (the architecture, family
    and preprocessing it records), its tensors left unread: reading them all for it read a
    checkpoint twice on every load."""
    if _weight_format(path) == "safetensors":
        return _safetensors_header(path)[0].get("__metadata__") or {}
    with CkptReader(path) as ckpt:
        return ckpt.metadata()


def write_weights(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
                  metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write by extension: ``.safetensors`` or ``.ckpt``."""
    if path.endswith(".safetensors"):
        write_safetensors(path, tensors, dtype, metadata)
    elif path.endswith(".ckpt"):
        write_ckpt(path, tensors, dtype, metadata)
    else:
        raise ValueError(f"{path}: output must end in .ckpt or .safetensors")
