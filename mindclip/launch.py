"""``python -m mindclip.launch [msrun options] SCRIPT [ARGS]``: MindSpore's ``msrun`` with what a
cluster job needs when a rank dies.

msrun notices a worker that exits with an error within a second and kills the other workers,
but then waits ~35 s for its scheduler and ends with a traceback ("Distributed job exited with
exception. Please check logs in directory ...") that names neither the rank nor how to go on.
This launcher runs msrun unchanged (its options and output pass through), and when a worker
fails it stops the whole job at once (msrun, its scheduler and every worker: within
``FAILURE_BOUND_S`` seconds of the failure) and prints one line naming the failed rank, how it
ended, its log file and the command that resumes the job. A job stopped by SIGTERM/SIGINT
(preemption: every rank checkpoints at the same step) ends with status 75, to be requeued.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from .errors import REQUEUE_EXIT_STATUS

FAILURE_BOUND_S = 10  # from msrun's report of a failed worker to the end of the whole job
_STARTED = re.compile(r"Start worker process with rank id:(\d+), log file:(\S+?)\.\s")
_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_PID = re.compile(r"\((\d+)[,:]")


def _msrun() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "msrun")
    return local if os.path.isfile(local) else "msrun"


def _worker_pid(log_file: str) -> Optional[int]:
    """The worker's pid, as MindSpore writes it at the head of its log lines."""
    try:
        with open(log_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = _PID.search(line)
                if match:
                    return int(match.group(1))
    except OSError:
        return None
    return None


def _last_step(log_file: str) -> Optional[int]:
    step = None
    try:
        with open(log_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("step "):
                    step = int(line.split()[1].split("/")[0])
    except (OSError, ValueError, IndexError):
        return step
    return step


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def resume_command(argv: List[str]) -> str:
    """The same launch with ``--resume`` (once) after the script's arguments."""
    args = list(argv) + ([] if "--resume" in argv else ["--resume"])
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", "mindclip.launch", *args])


def failure_line(rank: int, code: int, log_file: str, argv: List[str]) -> str:
    step = _last_step(log_file)
    at = f" after step {step}" if step is not None else ""
    return (f"error: rank {rank} {_how(code)}{at} (its log: {log_file}); the job was stopped; "
            f"resume with: {resume_command(argv)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    proc = subprocess.Popen([_msrun(), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, errors="replace", bufsize=1)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    logs: Dict[int, str] = {}
    failed: Optional[Tuple[int, int]] = None  # (pid, status) of the first worker that failed
    preempted: List[str] = []

    def workers() -> List[int]:
        return [pid for pid in (_worker_pid(log) for log in logs.values()) if pid]

    def on_signal(signum, _frame):
        # to the workers only: each finishes its step, the ranks agree, rank 0 checkpoints
        preempted.append(signal.Signals(signum).name)
        for pid in workers():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    deadline = None
    try:
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
                started = _STARTED.search(line)
                if started:
                    logs[int(started.group(1))] = started.group(2)
                bad = _FAILED.search(line)
                if bad and failed is None:
                    failed = (int(bad.group(1)), int(bad.group(2)))
                    deadline = time.time() + FAILURE_BOUND_S / 2
            if deadline is not None and (time.time() > deadline or not any(map(_alive, workers()))):
                break  # msrun would now wait ~35 s for its scheduler: end the job here
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is None:
        return code
    pid, status = failed
    if status == REQUEUE_EXIT_STATUS:
        print(f"the job was stopped by {(preempted or ['a signal'])[0]}; every rank checkpointed "
              f"at the same step; resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return REQUEUE_EXIT_STATUS
    rank = next((r for r, log in sorted(logs.items()) if _worker_pid(log) == pid), None)
    if rank is None:
        print(f"error: worker process {pid} {_how(status)}; the job was stopped; logs in "
              f"{sorted(set(os.path.dirname(p) for p in logs.values()))}; resume with: "
              f"{resume_command(argv)}", file=sys.stderr, flush=True)
    else:
        print(failure_line(rank, status, logs[rank], argv), file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
