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

    def _all_reduce(self, values):
        import mindspore as ms
        from mindspore import ops

        if self._reduce is None:
            self._reduce = ops.AllReduce()  # MindSpore's CPU AllReduce: float sums only
        return self._reduce(ms.Tensor(values, ms.float32)).asnumpy()

    def barrier(self) -> None:
        """Every rank waits here (rank 0's checkpoint is written before any rank exits, so a
        launcher that ends the job on the first exit cannot cut it short)."""
        if self.world > 1:
            self._all_reduce([0.0])

    def requested(self) -> Optional[str]:
        """The name of the signal that asks the run to stop after this step (on any rank), or None."""
        if self.world == 1:
            return signal.Signals(self.received).name if self.received else None
        counts = self._all_reduce([float(self.received == sig) for sig in STOP_SIGNALS])
        return next((sig.name for sig, n in zip(STOP_SIGNALS, counts) if n > 0), None)
