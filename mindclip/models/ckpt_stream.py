"""MindSpore's ``.ckpt`` format, written and read one tensor at a time.

A ``.ckpt`` is a protobuf ``Checkpoint { repeated Value value = 1; }`` with ``Value { string
tag = 1; TensorProto tensor = 2; }`` and ``TensorProto { repeated int64 dims = 1; string
tensor_type = 2; bytes tensor_content = 3; }``; a tensor over 512 MB is split along its first
axis into consecutive values under one tag (as ``mindspore.save_checkpoint`` writes it), and
strings (``append_dict``) are ``str`` tensors of UTF-32 text. ``mindspore.save_checkpoint``
builds each message in memory and the protobuf reader parses the whole file, so saving a
training state and reading it back to verify it held the state two to three more times
(a CoCa at batch 32 was OOM-killed writing its first checkpoint). Here the wire format is
written around each tensor's own buffer and read with small header reads and one
``readinto`` per tensor: the memory beyond the state is one tensor's conversion at most.
"""
from __future__ import annotations

import binascii
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

SLICE_BYTES = 512 * 1024 * 1024  # mindspore.save_checkpoint's SLICE_SIZE (in KB there)
CRC_MARK = b"crc_num"            # save_checkpoint(crc_check=True) ends with it and a CRC32
CHUNK = 16 * 1024 * 1024

NP_TO_CKPT = {np.dtype(k): v for k, v in (
    (np.int8, "Int8"), (np.uint8, "UInt8"), (np.int16, "Int16"), (np.uint16, "UInt16"),
    (np.int32, "Int32"), (np.uint32, "UInt32"), (np.int64, "Int64"), (np.uint64, "UInt64"),
    (np.float16, "Float16"), (np.float32, "Float32"), (np.float64, "Float64"), (np.bool_, "Bool"))}
CKPT_TO_NP = {v: k for k, v in NP_TO_CKPT.items()}
CKPT_TO_NP["BFloat16"] = np.dtype(np.uint16)  # its bits; the caller widens them


class FormatError(ValueError):
    """The bytes are not a MindSpore checkpoint (truncated, overwritten, another format)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _string(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _value_header(name: str, dims: Tuple[int, ...], kind: str, nbytes: int) -> bytes:
    """The bytes of ``Checkpoint.value`` up to its tensor's content (``nbytes`` follow)."""
    tensor = b"".join(_key(1, 0) + _varint(d) for d in dims)
    tensor += _string(2, kind.encode()) + _key(3, 2) + _varint(nbytes)
    value = _string(1, name.encode()) + _key(2, 2) + _varint(len(tensor) + nbytes) + tensor
    return _key(1, 2) + _varint(len(value) + nbytes) + value


def write_tensor(f: BinaryIO, name: str, arr: np.ndarray, kind: Optional[str] = None) -> None:
    """Append ``arr`` (C-contiguous) as ``Checkpoint.value`` entries under ``name``; ``kind``
    overrides the type name (``BFloat16`` for bits held as uint16)."""
    kind = kind or NP_TO_CKPT[arr.dtype]
    dims = tuple(int(d) for d in arr.shape)
    parts = [arr]
    if arr.nbytes > SLICE_BYTES and arr.ndim:
        parts = np.array_split(arr, -(-arr.nbytes // SLICE_BYTES))
    for part in parts:
        f.write(_value_header(name, dims, kind, part.nbytes))
        f.write(memoryview(np.ascontiguousarray(part)).cast("B"))


def write_string(f: BinaryIO, name: str, text: str) -> None:
    data = np.array(text).tobytes()  # numpy's UTF-32, as save_checkpoint's append_dict
    f.write(_value_header(name, (0,), "str", len(data)))  # save_checkpoint's dims for strings
    f.write(data)


class Entry:
    """One tag of a checkpoint: its type name, dims and the extents of its content."""

    def __init__(self, name: str, kind: str, dims: List[int]):
        self.name, self.kind, self.dims = name, kind, dims
        self.extents: List[Tuple[int, int]] = []

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.extents)

    @property
    def shape(self) -> Tuple[int, ...]:
        return () if self.dims == [0] else tuple(self.dims)


def _read_varint(f: BinaryIO, end: int) -> int:
    shift = result = 0
    while True:
        if f.tell() >= end:
            raise FormatError("a field runs past its message")
        byte = f.read(1)
        if not byte:
            raise FormatError("the file ends inside a field")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7


def _fields(f: BinaryIO, end: int) -> Iterable[Tuple[int, int, int]]:
    """``(field, wire type, value)`` of each field up to ``end``: the varint for wire type 0,
    the length for 2 (the file then stands at the payload, which the caller reads or skips)."""
    while f.tell() < end:
        key = _read_varint(f, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, _read_varint(f, end)
        elif wire == 2:
            length = _read_varint(f, end)
            if f.tell() + length > end:
                raise FormatError(f"field {field} runs past its message")
            start = f.tell()
            yield field, wire, length
            f.seek(start + length)
        elif wire in (1, 5):
            f.seek(f.tell() + (8 if wire == 1 else 4))
        else:
            raise FormatError(f"wire type {wire} is not protobuf's")


def _data_end(f: BinaryIO, size: int) -> int:
    """Where the messages end: before save_checkpoint's CRC trailer, which is checked."""
    if size < 17:
        return size
    f.seek(size - 17)
    tail = f.read(17)
    if tail[:7] != CRC_MARK:
        return size
    crc, left = 0, size - 17
    f.seek(0)
    while left:
        block = f.read(min(CHUNK, left))
        crc, left = binascii.crc32(block, crc), left - len(block)
    if crc != int.from_bytes(tail[7:], byteorder="big"):
        raise FormatError("its CRC does not match")
    return size - 17


def index(f: BinaryIO, size: int) -> Dict[str, Entry]:
    """Every tag of the checkpoint ``f`` (``size`` bytes) with where its content lies, reading
    headers only; consecutive values under one tag are one tensor's slices."""
    entries: Dict[str, Entry] = {}
    end, last = _data_end(f, size), None
    f.seek(0)
    for field, wire, length in _fields(f, end):
        if field != 1 or wire != 2:
            continue
        name, tensor = None, None
        for vfield, vwire, vlength in _fields(f, f.tell() + length):
            if vfield == 1 and vwire == 2:
                name = f.read(vlength).decode("utf-8", "replace")
            elif vfield == 2 and vwire == 2:
                dims, kind, content = [], None, None
                for tfield, twire, tvalue in _fields(f, f.tell() + vlength):
                    if tfield == 1 and twire == 0:
                        dims.append(tvalue)
                    elif tfield == 1 and twire == 2:  # packed dims
                        stop = f.tell() + tvalue
                        while f.tell() < stop:
                            dims.append(_read_varint(f, stop))
                    elif tfield == 2 and twire == 2:
                        kind = f.read(tvalue).decode("utf-8", "replace")
                    elif tfield == 3 and twire == 2:
                        content = (f.tell(), tvalue)
                tensor = (dims, kind, content or (f.tell(), 0))
            elif vfield == 3:
                raise FormatError(f"entry {name!r} is a map parameter; only tensor checkpoints "
                                  "hold model weights")
        if name is None or tensor is None or tensor[1] is None:
            raise FormatError("an entry without a name, tensor or type")
        dims, kind, extent = tensor
        if name != last:
            if name in entries:
                raise FormatError(f"tag {name!r} appears twice")
            entries[name] = Entry(name, kind, dims)
        entries[name].extents.append(extent)
        last = name
    return entries


def read_entry(f: BinaryIO, entry: Entry) -> np.ndarray:
    """The tensor of ``entry`` (bfloat16 as its uint16 bits), read straight into its array."""
    if entry.kind not in CKPT_TO_NP:
        raise FormatError(f"tensor {entry.name!r} has type {entry.kind!r}; readable types are "
                          f"{sorted(CKPT_TO_NP)}")
    dtype = CKPT_TO_NP[entry.kind]
    count = int(np.prod(entry.shape, dtype=np.int64))
    if entry.nbytes != count * dtype.itemsize:
        raise FormatError(f"tensor {entry.name!r}: {entry.nbytes} bytes for shape {entry.shape} "
                          f"of {entry.kind}")
    arr = np.empty(entry.shape, dtype)
    view, at = memoryview(arr.reshape(-1)).cast("B"), 0
    for offset, nbytes in entry.extents:
        f.seek(offset)
        if f.readinto(view[at:at + nbytes]) != nbytes:
            raise FormatError("the file ends inside a tensor")
        at += nbytes
    return arr


def read_string(f: BinaryIO, entry: Entry) -> str:
    f.seek(entry.extents[0][0])
    data = b"".join(f.read(n) for _, n in entry.extents)
    return str(np.frombuffer(data, f"U{len(data) // 4}")[0]) if data else ""


def hash_entries(f: BinaryIO, entries: Dict[str, Entry], digest,
                 hash_header: Callable[[Entry], bytes],
                 widen_bf16: Callable[[np.ndarray], np.ndarray]) -> None:
    """Feed each tensor entry, in name order, to ``digest``: ``hash_header(entry)`` then its
    bytes (bfloat16 bits as ``widen_bf16`` reads them back), in chunks, never a whole tensor."""
    for name in sorted(entries):
        entry = entries[name]
        if entry.kind == "str":
            continue
        digest.update(hash_header(entry))
        for offset, nbytes in entry.extents:
            f.seek(offset)
            while nbytes:
                block = f.read(min(CHUNK, nbytes))  # CHUNK is even: whole bf16 values
                if not block:
                    raise FormatError("the file ends inside a tensor")
                nbytes -= len(block)
                if entry.kind == "BFloat16":
                    block = widen_bf16(np.frombuffer(block, np.uint16)).tobytes()
                digest.update(block)
