"""MindSpore's memory pool for a run (``context.memory``), and the size it starts with on CPU.

MindSpore's pool starts with one 2 GB block and grows in 2 GB blocks. A train step whose
working set spans several blocks is laid out while the blocks are added on its first call;
from the second call on, with every block there, its buffers land elsewhere and touch pages
the first call did not: ViT-B-16-SigLIP at batch 16 peaks at 5.83 GB on its first step and
6.43 GB from the second on (AMD EPYC Zen 3, GRAPH mode). With the working set inside the first
block the layout repeats and every step peaks as the first did (5.83 GB). A block is address
space until it is written: an untouched 20 GB first block added nothing to the resident set.
So on CPU a run starts the pool at three quarters of the machine's memory (``init_size:
auto``, the default), unless the kernel counts address space against a strict limit
(``vm.overcommit_memory = 2``), where MindSpore's default stays.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

AUTO = "auto"
SHARE_OF_MEMORY = 0.75
_MEMINFO = "/proc/meminfo"
_OVERCOMMIT = "/proc/sys/vm/overcommit_memory"


def auto_init_size(meminfo: str = _MEMINFO, overcommit: str = _OVERCOMMIT) -> Optional[str]:
    """The first block's size for ``init_size: auto`` on CPU (``"18GB"`` on a 24 GB machine),
    or None for MindSpore's default: strict overcommit, no ``/proc``, or under 3 GB of memory
    (its 2 GB block is then as large)."""
    try:
        with open(overcommit) as f:
            if f.read().strip() == "2":
                return None
        with open(meminfo) as f:
            total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    size = int(total_kb / 2**20 * SHARE_OF_MEMORY)
    return f"{size}GB" if size > 2 else None


def pool_sizes(memory: Mapping[str, object], device_target: str) -> Dict[str, str]:
    """``mindspore.runtime.set_memory``'s arguments for a run's ``context.memory``: the sizes
    given, ``init_size: auto`` resolved (on CPU; elsewhere MindSpore's default)."""
    sizes = {key: str(value) for key, value in memory.items() if value is not None}
    if sizes.get("init_size") == AUTO:
        del sizes["init_size"]
        size = auto_init_size() if device_target == "CPU" else None
        if size is not None:
            sizes["init_size"] = size
    return sizes


_APPLIED: Dict[str, str] = {}  # what this process gave set_memory


def set_memory_pool(memory: Mapping[str, object], device_target: str) -> None:
    """Give MindSpore a run's ``context.memory`` (:func:`pool_sizes`), before anything
    allocates; MindSpore takes it once per process, so a second, different one is refused."""
    import mindspore as ms

    from .config import ConfigError

    sizes = pool_sizes(memory, device_target)
    if not sizes or sizes == _APPLIED:
        return
    if _APPLIED:
        raise ConfigError(f"context.memory is set once per process (MindSpore's rule): "
                          f"{_APPLIED} already, {sizes} asked")
    try:
        ms.runtime.set_memory(**sizes)
    except ValueError as err:  # MindSpore names the value only; name what the user gave
        given = {key: str(value) for key, value in memory.items() if value not in (None, AUTO)}
        raise ConfigError(f"context.memory {given}: {err}") from None
    _APPLIED.update(sizes)
