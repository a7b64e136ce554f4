"""Reading and writing flat weight files (MindSpore ``.ckpt`` and ``.safetensors``).

safetensors is parsed here directly rather than through a framework so that bf16 files
(which numpy cannot represent) load everywhere without torch, and so that the metadata
block (where we record the architecture) is available before any tensor is read.
Every write goes to a temporary file that is renamed into place, so an interrupted
write never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import binascii
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


# MindSpore's checkpoint proto tensor types as numpy dtypes; BFloat16 is read as its bits.
_CKPT_TO_NP = {
    "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16, "Int32": np.int32,
    "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64, "Float16": np.float16,
    "Float32": np.float32, "Float64": np.float64, "Bool": np.bool_, "BFloat16": np.uint16,
}
_CRC_MARK = b"crc_num"


def read_ckpt(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a MindSpore ``.ckpt``; string entries (``append_dict``) are returned as metadata.

    The protobuf is parsed here rather than through ``ms.load_checkpoint``, which refuses any
    file larger than the machine's *free* pages (``SC_AVPHYS_PAGES``): page cache does not count
    as free, so after a few GB of file reads a 600 MB ViT-B/32 checkpoint was refused on a
    machine with 20 GB available. Tensors come back as numpy arrays, not Parameters, which
    also skips one copy of every weight.
    """
    import google.protobuf.message
    from mindspore.train.checkpoint_pb2 import Checkpoint

    try:
        with open(path, "rb") as f:
            content = f.read()
        if content[-17:-10] == _CRC_MARK:  # save_checkpoint(crc_check=True) appends a CRC32
            expected_crc = int.from_bytes(content[-10:], byteorder="big")
            content = content[:-17]
            if binascii.crc32(content, 0) != expected_crc:
                raise CorruptCheckpointError(f"{path} is damaged: its CRC does not match")
        proto = Checkpoint()
        proto.ParseFromString(content)
        del content
    except google.protobuf.message.DecodeError as exc:
        raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {path}: {exc}") from None
    tensors, metadata = {}, {}
    # Large tensors are saved in segments under one tag, one after another.
    segments, values = [], proto.value
    for i, element in enumerate(values):
        if not element.HasField("tensor"):
            raise CorruptCheckpointError(f"{path}: entry {element.tag!r} is a map parameter; "
                                         "only tensor checkpoints hold model weights")
        segments.append(element.tensor.tensor_content)
        if i + 1 < len(values) and values[i + 1].tag == element.tag:
            continue
        data, segments = b"".join(segments), []
        kind = element.tensor.tensor_type
        if kind == "str":
            metadata[element.tag] = str(np.frombuffer(data, f"U{len(data) // 4}")[0])
            continue
        if kind not in _CKPT_TO_NP:
            raise CorruptCheckpointError(f"{path}: tensor {element.tag!r} has type {kind!r}; "
                                         f"readable types are {sorted(_CKPT_TO_NP)}")
        dims = [] if list(element.tensor.dims) == [0] else list(element.tensor.dims)
        try:
            arr = np.frombuffer(data, _CKPT_TO_NP[kind])
            arr = bf16_bits_to_fp32(arr) if kind == "BFloat16" else arr.copy()
            tensors[element.tag] = arr.reshape(dims)
        except ValueError as exc:
            raise CorruptCheckpointError(f"cannot read MindSpore checkpoint {path}: tensor "
                                         f"{element.tag!r}: {exc}") from None
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
