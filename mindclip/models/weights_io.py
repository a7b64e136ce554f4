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

METADATA_KEY = "mindclip_config"       # the architecture, as JSON
FAMILY_KEY = "mindclip_family"         # the model family's registry name
TRAIN_STATE_KEY = "mindclip_train_state"  # run position of a training checkpoint
CHECKSUM_KEY = "mindclip_sha256"       # of the tensors as they read back (see tensor_checksum)


class CorruptCheckpointError(ValueError):
    """A weight file whose tensors do not match the checksum written with them, or that
    cannot be parsed at all (truncated, overwritten)."""


def tensor_checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.data)
    return digest.hexdigest()


def _as_read_back(arr: np.ndarray, dtype: str) -> np.ndarray:
    """The array a reader gets back after writing ``arr`` as ``dtype`` (bf16 reads as fp32)."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        return arr
    if dtype == "bf16":
        return bf16_bits_to_fp32(fp32_to_bf16_bits(arr))
    return arr.astype(np.float16 if dtype == "fp16" else np.float32)


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
    return (bits.astype(np.uint32) << 16).view(np.float32)


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


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Return ``(tensors, metadata)``; bf16 tensors come back as fp32."""
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
        data = f.read()
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    end_of_data = max((info["data_offsets"][1] for info in header.values()), default=0)
    if len(data) < end_of_data:
        raise CorruptCheckpointError(
            f"{path} is truncated: its header describes {end_of_data} bytes of tensors, the "
            f"file holds {len(data)} (an interrupted download or copy?)")
    for name, info in header.items():
        start, end = info["data_offsets"]
        buf = data[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":
            arr = bf16_bits_to_fp32(np.frombuffer(buf, dtype=np.uint16))
        elif dtype in _ST_TO_NP:
            arr = np.frombuffer(buf, dtype=_ST_TO_NP[dtype]).copy()
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        tensors[name] = arr.reshape(info["shape"])
    return _verified(path, tensors, metadata)


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write float tensors as ``dtype`` (fp32/fp16/bf16); integer tensors are kept as they are."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        if np.issubdtype(arr.dtype, np.floating):
            if dtype == "bf16":
                blob, st_dtype = fp32_to_bf16_bits(arr).tobytes(), "BF16"
            else:
                arr = arr.astype(np.float16 if dtype == "fp16" else np.float32)
                blob, st_dtype = np.ascontiguousarray(arr).tobytes(), _NP_TO_ST[arr.dtype]
        else:
            blob, st_dtype = np.ascontiguousarray(arr).tobytes(), _NP_TO_ST[arr.dtype]
        header[name] = {"dtype": st_dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    checksum = tensor_checksum({k: _as_read_back(v, dtype) for k, v in tensors.items()})
    header["__metadata__"] = {**{str(k): str(v) for k, v in (metadata or {}).items()},
                              CHECKSUM_KEY: checksum}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for blob in chunks:
                f.write(blob)

    atomic_write(path, write)


def read_ckpt(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a MindSpore ``.ckpt``; string entries (``append_dict``) are returned as metadata."""
    import mindspore as ms

    try:
        raw = ms.load_checkpoint(path)
    except Exception as exc:  # MindSpore raises bare ValueError/RuntimeError on corrupt files
        raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {path}: {exc}") from None
    tensors, metadata = {}, {}
    for name, value in raw.items():
        if isinstance(value, str):
            metadata[name] = value
        elif hasattr(value, "asnumpy"):
            if value.dtype == ms.bfloat16:
                value = value.astype(ms.float32)
            tensors[name] = value.asnumpy()
        else:
            metadata[name] = str(value)
    return _verified(path, tensors, metadata)


def write_ckpt(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
               metadata: Optional[Mapping[str, str]] = None) -> None:
    import mindspore as ms

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    target = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}[dtype]
    items = []
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        t = ms.Tensor(arr)
        if np.issubdtype(arr.dtype, np.floating):
            t = ms.Tensor(arr.astype(np.float32)).astype(target)
        items.append({"name": name, "data": t})
    checksum = tensor_checksum({k: _as_read_back(v, dtype) for k, v in tensors.items()})
    atomic_write(path, lambda tmp: ms.save_checkpoint(
        items, tmp, append_dict={**dict(metadata or {}), CHECKSUM_KEY: checksum}))


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a ``.ckpt`` or ``.safetensors`` file into numpy arrays plus string metadata."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(".ckpt"):
        return read_ckpt(path)
    raise ValueError(f"{path}: expected a .ckpt or .safetensors file")


def write_weights(path: str, tensors: Mapping[str, np.ndarray], dtype: str = "fp32",
                  metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write by extension: ``.safetensors`` or ``.ckpt``."""
    if path.endswith(".safetensors"):
        write_safetensors(path, tensors, dtype, metadata)
    elif path.endswith(".ckpt"):
        write_ckpt(path, tensors, dtype, metadata)
    else:
        raise ValueError(f"{path}: output must end in .ckpt or .safetensors")
