"""Data-parallel setup through MindSpore's own runtime (``msrun``)."""
from __future__ import annotations

import os
from typing import Tuple

# Variables msrun sets for every worker it launches.
_LAUNCHER_VARS = ("MS_WORKER_NUM", "MS_ROLE", "RANK_SIZE")


def launched_by_msrun() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS) and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def init_distributed(mode: str = "auto") -> Tuple[int, int]:
    """Initialise communication when running under msrun; returns ``(rank, world_size)``.

    ``mode``: "auto" (on under a launcher), True (required) or False (single process).
    """
    import mindspore as ms
    from mindspore.communication import GlobalComm, get_group_size, get_rank, init

    want = launched_by_msrun() if mode == "auto" else bool(mode)
    if not want:
        return 0, 1
    if not GlobalComm.INITED:
        if not launched_by_msrun():
            raise RuntimeError("parallel.data_parallel is on but the process was not started by "
                               "msrun (e.g. msrun --worker_num 2 --local_worker_num 2 "
                               "run_mindformer.py ...)")
        init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()
