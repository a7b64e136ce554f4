"""MindSpore .ckpt files written and read one tensor at a time: what mindspore.load_checkpoint
reads of ours equals what we wrote, what mindspore.save_checkpoint writes (sliced, with its
CRC) we read back equal, damage is detected while verifying, and a training checkpoint's save
and verification hold at most a small part of the state beside it."""
import os
import tracemalloc

import numpy as np
import pytest

import mindspore as ms

from mindclip.models import ckpt_stream
from mindclip.models.weights_io import (CHECKSUM_KEY, CorruptCheckpointError, read_ckpt, verify_ckpt,
                                        write_ckpt)


def _tensors():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((100, 7)).astype(np.float32),
            "b.vec": rng.standard_normal(5).astype(np.float32),
            "scale": np.array(2.5, np.float32),
            "steps": np.array(7, np.int32),
            "rng_state": np.array([123456789012, 3], np.int64),
            "half": rng.standard_normal((4, 4)).astype(np.float16)}


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_mindspore_reads_what_we_write(tmp_path, monkeypatch, dtype):
    monkeypatch.setattr(ckpt_stream, "SLICE_BYTES", 1024)
    tensors = _tensors()
    path = str(tmp_path / "ours.ckpt")
    write_ckpt(path, tensors, dtype, metadata={"note": "héllo, wörld"})
    with open(path, "rb") as f:
        slices = len(ckpt_stream.index(f, os.path.getsize(path))["w"].extents)
    assert slices == {"fp32": 3, "fp16": 2, "bf16": 2}[dtype]  # 2800 or 1400 bytes
    loaded = ms.load_checkpoint(path)
    want_float = {"fp32": np.float32, "fp16": np.float16, "bf16": np.float32}[dtype]
    for name, arr in tensors.items():
        got = loaded[name].float().asnumpy() if dtype == "bf16" and arr.dtype.kind == "f" \
            else loaded[name].asnumpy()
        expected = arr.astype(want_float) if arr.dtype.kind == "f" else arr
        assert got.shape == arr.shape, name
        if dtype == "bf16" and arr.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=2 ** -8, err_msg=name)
        else:
            assert got.dtype == expected.dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
    back, metadata = read_ckpt(path)  # and our reader, checksum verified
    assert metadata["note"] == "héllo, wörld" and CHECKSUM_KEY in metadata
    assert verify_ckpt(path)["note"] == "héllo, wörld"
    for name in tensors:
        got = loaded[name].float().asnumpy() if dtype == "bf16" and tensors[name].dtype.kind == "f" \
            else loaded[name].asnumpy()
        np.testing.assert_array_equal(back[name], got, err_msg=name)


@pytest.mark.parametrize("crc_check", [False, True])
def test_we_read_what_mindspore_writes(tmp_path, monkeypatch, crc_check):
    import mindspore.train.serialization as serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # KB: "w" (2800 bytes) in 3 slices
    tensors = _tensors()
    path = str(tmp_path / "theirs.ckpt")
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()], path,
                       append_dict={"note": "x"}, crc_check=crc_check)
    with open(path, "rb") as f:
        entries = ckpt_stream.index(f, os.path.getsize(path))
    assert len(entries["w"].extents) == 3
    back, metadata = read_ckpt(path)
    assert metadata == {"note": "x"}
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape, name
        np.testing.assert_array_equal(back[name], arr, err_msg=name)


def test_damage_is_found_while_verifying(tmp_path):
    path = str(tmp_path / "ours.ckpt")
    write_ckpt(path, {"a": np.ones((256, 256), np.float32), "b": np.zeros(3, np.float32)})
    verify_ckpt(path)
    data = bytearray(open(path, "rb").read())
    flipped = str(tmp_path / "flipped.ckpt")
    data[len(data) // 2] ^= 0x10  # inside "a": it still parses
    open(flipped, "wb").write(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="do not match the checksum"):
        verify_ckpt(flipped)
    with pytest.raises(CorruptCheckpointError, match="do not match the checksum"):
        read_ckpt(flipped)
    truncated = str(tmp_path / "truncated.ckpt")
    open(truncated, "wb").write(bytes(data[: len(data) // 3]))
    for check in (verify_ckpt, read_ckpt):
        with pytest.raises(CorruptCheckpointError, match="cannot read MindSpore checkpoint"):
            check(truncated)


def test_training_checkpoint_save_and_verify_hold_one_tensor_beside_the_state(tmp_path):
    """64 Parameters of 1 MB: writing, hashing and reading back the checkpoint allocates at
    most a fifth of the state (numpy's allocations, as tracemalloc sees them)."""
    from mindspore import Parameter, Tensor

    from mindclip.training.checkpoint import save_training_checkpoint

    rng = np.random.default_rng(0)
    params = [Parameter(Tensor(rng.standard_normal((512, 512)).astype(np.float32)), name=f"p{i}")
              for i in range(64)]
    state = sum(p.asnumpy().nbytes for p in params)
    tracemalloc.start()
    try:
        path = save_training_checkpoint(str(tmp_path), params, {"global_step": 1})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 0.2 * state, f"{peak / 2 ** 20:.1f} MB allocated for a {state / 2 ** 20:.0f} MB state"
    back, _ = read_ckpt(path)
    for p in params:
        np.testing.assert_array_equal(back[p.name], p.asnumpy())
