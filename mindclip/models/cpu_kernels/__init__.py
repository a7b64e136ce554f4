"""Fused CPU kernels, built once per machine with the system's C++ compiler and run as
MindSpore ``Custom`` "aot" ops.

MindSpore 2.10's CPU backend has no fused GELU: exact GELU runs as Erf/Mul/Add kernels, and
its Erf kernel alone is ~7x torch's whole GELU; its LayerNorm takes ~4x torch's. ``kernels.cc``
holds GELU (exact and tanh), QuickGELU, SiLU, LayerNorm, LayerScale's channel scale, the 2-D
rotary embedding, the depthwise convolution, multi-head attention and the caption loss'
softmax, forward and backward, each vectorised and split over the cores.

The library is compiled on first use into ``$MINDCLIP_HOME/kernels/`` (the weight store's
root, default ``~/.cache/mindclip``), keyed by the source, the flags and the CPU's feature flags
(it is built with ``-march=native``), and written atomically. Without a compiler, off Linux, or
with ``MINDCLIP_CPU_KERNELS=0``, callers get ``None`` and keep MindSpore's own ops, which
compute the same functions more slowly; the reason is logged once.

Cells that use a kernel carry ``fused = True``; :func:`portable` turns it off while a model is
traced for export (a MindIR runs on other machines and backends, without this library).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops

from ..store import store_root

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("kernels.cc")
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno",
          "-fno-trapping-math"]
ENV_SWITCH = "MINDCLIP_CPU_KERNELS"

# The kernels' thread count (0: OpenMP's default, every core) and what each loaded library
# was told. MindSpore loads the library by its path, so the ctypes handle of that path is
# the same library the ops run in: one thread count serves both.
_threads = 0
_applied: Dict[str, int] = {}


def enabled() -> bool:
    """Whether the fused kernels apply: on the CPU backend, unless ``MINDCLIP_CPU_KERNELS=0``."""
    return (os.environ.get(ENV_SWITCH, "1") != "0"
            and ms.get_context("device_target") == "CPU")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def library_path() -> Optional[str]:
    """Path of the compiled kernel library, building it if needed; None if it cannot be built.
    A library removed while the process runs (it lived in a temporary ``$MINDCLIP_HOME``) is
    built again, and the ops made from it are dropped."""
    path = _library()
    if path is not None and not os.path.isfile(path):
        _library.cache_clear()
        _op.cache_clear()
        path = _library()
    if path is not None and _applied.get(path) != _threads:
        _loaded(path).mindclip_set_threads(_threads)
        _applied[path] = _threads
    return path


@functools.lru_cache(maxsize=None)
def _loaded(path: str) -> ctypes.CDLL:
    return ctypes.CDLL(path)


def set_threads(n: int) -> int:
    """Run the fused kernels' parallel loops on ``n`` threads from now on, or with ``n = 0`` on
    OpenMP's default (every core, or ``OMP_NUM_THREADS``: what they use until a call). Returns
    the count it replaces. MindSpore's own kernels follow ``threads_num``, which
    :func:`set_num_threads` sets together with this."""
    global _threads
    previous, _threads = _threads, _thread_count(n, allow_default=True)
    if _library.cache_info().currsize:  # a library is loaded: it takes the count now
        library_path()
    return previous


def team_size() -> Optional[int]:
    """How many threads a fused kernel's parallel loop runs on now (None without kernels)."""
    path = library_path() if enabled() else None
    return None if path is None else int(_loaded(path).mindclip_team_size())


def set_num_threads(n: int) -> None:
    """Run CPU kernels on ``n`` threads (``torch.set_num_threads``' counterpart): MindSpore's
    (``threads_num``, which MindSpore lets a process set once; a second call raises its
    RuntimeError) and the fused kernels'. ``context.threads`` in a run config calls this.
    Below the core count, a run leaves the other cores to other processes (other ranks on
    the same machine, other jobs): threads beyond what a run was given wait for each other
    in OpenMP's barriers, spinning."""
    ms.device_context.cpu.op_tuning.threads_num(_thread_count(n))
    set_threads(n)


def _thread_count(n: int, allow_default: bool = False) -> int:
    low = 0 if allow_default else 1
    if isinstance(n, bool) or not isinstance(n, int) or n < low:
        raise ValueError(f"the kernel thread count must be an integer >= {low}, got {n!r}")
    return n


@functools.lru_cache(maxsize=None)
def _library() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return _unavailable("MindSpore runs CPU aot kernels on Linux only")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return _unavailable("no C++ compiler (g++) on PATH")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), compiler.encode(),
                                      _cpu_flags().encode()])).hexdigest()[:16]
    target = Path(store_root()) / "kernels" / f"kernels-{key}.so"
    if target.is_file():
        return str(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp], check=True,
                           capture_output=True, text=True, timeout=300)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)  # concurrent builders each replace with a whole file
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        return _unavailable(f"building {_SOURCE.name} failed: {detail.strip()[:500]}")
    return str(target)


def _unavailable(reason: str) -> None:
    logger.warning("mindclip: fused CPU kernels unavailable (%s); GELU and LayerNorm run "
                   "through MindSpore's own, slower ops", reason)
    return None


def custom_op(name: str, like: Tuple[int, ...] = (0,)) -> Optional[Callable]:
    """The library's function ``name`` as a MindSpore op, or None where the kernels do not
    apply. Output ``i`` has the shape and dtype (float32) of input ``like[i]``."""
    if not enabled():
        return None
    library_path()  # the library is still there (or built again)
    return _op(name, like)


@functools.lru_cache(maxsize=None)
def _op(name: str, like: Tuple[int, ...]) -> Optional[Callable]:
    path = library_path()
    if path is None:
        return None

    def infer(*inputs):
        return inputs[like[0]] if len(like) == 1 else tuple(inputs[i] for i in like)

    return ops.Custom(f"{path}:{name}", out_shape=infer, out_dtype=infer, func_type="aot")


@contextlib.contextmanager
def portable(model: nn.Cell) -> Iterator[nn.Cell]:
    """Within the block, ``model`` runs MindSpore's own ops instead of the fused kernels and
    the im2col convolutions (:mod:`mindclip.models.conv`): what an exported MindIR must hold."""
    cells = [cell for _, cell in model.cells_and_names() if getattr(cell, "fused", False)]
    convs = [cell for _, cell in model.cells_and_names() if getattr(cell, "path", None) == "matmul"]
    for cell in cells:
        cell.fused = False
    for cell in convs:
        cell.path = "native"
    try:
        yield model
    finally:
        for cell in cells:
            cell.fused = True
        for cell in convs:
            cell.path = "matmul"
