"""Stopping on a scheduler's signal: SIGTERM (SLURM, Kubernetes, ModelArts send it before they
preempt a job) and SIGINT (Ctrl-C) let the step in flight finish; the run then writes a
checkpoint and stops with :class:`~mindclip.errors.Preempted`. Under data parallelism the ranks
agree on the step (one all-reduce of a flag per step), so every rank stops at the same one and
rank 0 writes one consistent checkpoint."""
from __future__ import annotations

import signal
import threading
from typing import Dict, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager installing the handlers (main thread only) and restoring the previous
    ones on exit. A second SIGINT while a stop is pending interrupts at once."""

    def __init__(self, world: int = 1):
        self.world = world
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._reduce = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def requested(self) -> Optional[str]:
        """The name of the signal that asks the run to stop after this step (on any rank), or None."""
        flag = int(self.received or 0)
        if self.world > 1:
            import mindspore as ms
            from mindspore import ops

            if self._reduce is None:
                self._reduce = ops.AllReduce(op=ops.ReduceOp.MAX)
            flag = int(self._reduce(ms.Tensor([flag], ms.int32)).asnumpy()[0])
        return signal.Signals(flag).name if flag else None
