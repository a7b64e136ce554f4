"""Training feedback: a progress bar, periodic log lines and metrics as JSON lines."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, Optional

from ..models.weights_io import atomic_write


def format_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class MetricsLogger:
    """Writes ``metrics.jsonl`` (one JSON object per line) and prints log lines; only the
    main rank writes."""

    def __init__(self, output_dir: str, enabled: bool = True, total_steps: int = 0,
                 progress_bar: bool = True, log_interval: int = 10):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.total_steps = total_steps
        self.log_interval = max(int(log_interval), 1)
        self.start = time.time()
        self.bar = None
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            # a bar only on a terminal: in a log file (msrun's worker logs, a batch job) its
            # carriage returns make one multi-megabyte line; log lines say the same there
            if progress_bar and sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=total_steps, desc="train", unit="step", file=sys.stderr,
                                dynamic_ncols=True, leave=True)

    def write(self, record: Dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def purge_after(self, step: int, epoch: int) -> int:
        """Drop the records a resumed run is about to write again: training steps after
        ``step``, epoch records from ``epoch`` on and evaluations after ``epoch`` completed
        epochs (TensorBoard's ``purge_step``). The file is rewritten atomically, so the log
        holds each step once whenever the earlier run was killed. Returns how many went."""
        if not self.enabled or not os.path.isfile(self.path):
            return 0
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if not _redone(json.loads(line), step, epoch)]
        if len(kept) != len(lines):
            def write(tmp):
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(kept)

            atomic_write(self.path, write)
        return len(lines) - len(kept)

    def start_at(self, step: int) -> None:
        self.first_step = step
        self.start = time.time()
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def step(self, step: int, epoch: int, loss: float, lr: float, logit_scale: float,
             samples: int, terms: Optional[Dict[str, float]] = None,
             scaling: Optional[Dict[str, float]] = None) -> None:
        """Log one step; ``terms`` are the objective's named loss terms (``loss_<name>``),
        ``scaling`` the loss-scale state of an fp16 run (scale, skipped and clean steps)."""
        if not self.enabled:
            return
        terms = {f"loss_{k}": v for k, v in (terms or {}).items()}
        elapsed = time.time() - self.start
        done = step - getattr(self, "first_step", 0)
        rate = samples / elapsed if elapsed > 0 else 0.0
        eta = elapsed / max(done, 1) * (self.total_steps - step)
        record = {"type": "train", "step": step, "epoch": epoch, "loss": loss, **terms, "lr": lr,
                  "logit_scale": logit_scale, **(scaling or {}), "samples_per_s": rate,
                  "time": time.time()}
        self.write(record)
        # A single-term objective's term is the loss itself: no need to show it twice.
        shown = terms if len(terms) > 1 else {}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", **{k[5:]: f"{v:.3f}" for k, v in shown.items()},
                                 lr=f"{lr:.2e}")
        if step % self.log_interval == 0 or step == self.total_steps:
            parts = "".join(f" {k} {v:.4f}" for k, v in shown.items())
            if scaling:
                parts += (f" loss_scale {scaling['amp_scale']:g}"
                          f" skipped {scaling['amp_skipped_steps']}")
            self.info(f"step {step}/{self.total_steps} epoch {epoch} loss {loss:.4f}{parts} "
                      f"lr {lr:.3e} logit_scale {logit_scale:.3f} samples/s {rate:.1f} "
                      f"eta {format_eta(eta)}")

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _redone(record: Dict, step: int, epoch: int) -> bool:
    """Whether a run resuming at ``step`` (``epoch`` epochs complete) writes ``record`` again."""
    kind = record.get("type")
    if kind == "dataset":  # written again at the start of every run
        return True
    if kind == "train":
        return record["step"] > step
    if kind == "epoch":
        return record["epoch"] >= epoch
    if kind == "eval":  # an evaluation's ``epoch`` counts the epochs completed before it
        return record["epoch"] > epoch
    return False


def read_metrics(path: str, kind: Optional[str] = None):
    """Records of a metrics.jsonl, optionally only one ``type``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if kind is None or rec.get("type") == kind:
                    out.append(rec)
    return out
