"""PNG plots of training curves and per-class accuracy (matplotlib, headless)."""
from __future__ import annotations

import os
from typing import Dict, List

from .training.logger import read_metrics


def _figure(**kwargs):
    """A headless matplotlib Figure (its object API: no pyplot global figure state to close,
    which a library's plotting should not touch)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_training_curves(metrics_path: str, out_png: str) -> str:
    """Loss (the total and each named term of a multi-term objective), learning rate, the
    loss scale of an fp16 run (skipped steps marked) and, when the run evaluated after
    epochs, zero-shot top-1 / retrieval mean recall against step, from a run's
    ``metrics.jsonl``."""
    records = read_metrics(metrics_path, "train")
    if not records:
        raise ValueError(f"{metrics_path} holds no training records")
    by_step: Dict[int, Dict] = {r["step"]: r for r in records}  # a resumed run re-logs steps
    steps = sorted(by_step)
    evals = [r for r in read_metrics(metrics_path, "eval") if "step" in r]
    scaled = any("amp_scale" in r for r in records)
    rows = 2 + bool(evals) + scaled
    fig = _figure(figsize=(7, 3 * rows))
    axes = fig.subplots(rows, 1, sharex=True)
    ax_loss, ax_lr = axes[0], axes[1]
    ax_loss.plot(steps, [by_step[s]["loss"] for s in steps], color="tab:blue", label="total")
    terms = sorted({k for r in records for k in r if k.startswith("loss_")})
    if len(terms) > 1:  # a single term is the total itself
        for name in terms:
            ax_loss.plot(steps, [by_step[s].get(name, float("nan")) for s in steps],
                         label=name[len("loss_"):], linewidth=1)
        ax_loss.legend(fontsize=8)
    ax_loss.set_ylabel("training loss")
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(steps, [by_step[s]["lr"] for s in steps], color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    if scaled:
        ax_scale = axes[2]
        scale_steps = [s for s in steps if "amp_scale" in by_step[s]]
        ax_scale.plot(scale_steps, [by_step[s]["amp_scale"] for s in scale_steps], color="tab:green")
        skipped = [s for prev, s in zip(scale_steps, scale_steps[1:])
                   if by_step[s]["amp_skipped_steps"] > by_step[prev]["amp_skipped_steps"]]
        if skipped:
            ax_scale.plot(skipped, [by_step[s]["amp_scale"] for s in skipped], "x", color="tab:red",
                          label="skipped step")
            ax_scale.legend(fontsize=8)
        ax_scale.set_yscale("log", base=2)
        ax_scale.set_ylabel("loss scale")
        ax_scale.grid(alpha=0.3)
    if evals:  # per-epoch evaluation, as published fine-tuning reports show it
        ax_eval = axes[-1]
        curves = (("top1", "zero-shot top-1"), ("mean_recall", "retrieval mean recall"))
        for key, label in curves:
            points = [(r["step"], _metric(r, key)) for r in evals if _metric(r, key) is not None]
            if points:
                ax_eval.plot(*zip(*points), marker="o", label=label)
        ax_eval.set_ylabel("eval (%)")
        ax_eval.legend(fontsize=8)
        ax_eval.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics_path))) or "training")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def _metric(record: Dict, key: str):
    """A metric of an eval record, top level or inside its ``retrieval`` part."""
    if key in record:
        return record[key]
    return (record.get("retrieval") or {}).get(key)


def _bars(labels: List[str], values: List[float], out_png: str, xlim: float, xlabel: str, title: str,
          color: str, annotate=None) -> str:
    """A horizontal bar chart, first label on top; ``annotate(ax)`` adds text to the bars."""
    fig = _figure(figsize=(7, max(2.5, 0.3 * len(labels) + 1)))
    ax = fig.subplots()
    ax.barh(range(len(labels)), values, color=color)
    if annotate is not None:
        annotate(ax)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def plot_per_class_accuracy(per_class: Dict[str, float], out_png: str, title: str = "") -> str:
    """Horizontal bars of top-1 accuracy per class."""
    names: List[str] = list(per_class)
    return _bars(names, [per_class[n] for n in names], out_png, 100, "top-1 accuracy (%)",
                 title or "zero-shot accuracy per class", "tab:green")


def plot_suite(records: List[Dict], out_png: str, title: str = "") -> str:
    """Horizontal bars of each dataset's main metric in a benchmark suite (missing ones
    labelled, without a bar)."""
    ok = [r.get("status") == "ok" for r in records]
    scores = [r["score"] if good else 0.0 for r, good in zip(records, ok)]
    labels = [(r.get("column") or r["dataset"]) + (f" ({r['main_metric']})" if good else "")
              for r, good in zip(records, ok)]

    def annotate(ax):
        for i, good in enumerate(ok):
            if good:
                ax.text(scores[i] + 0.01, i, f"{scores[i]:.3f}", va="center", fontsize=7)
            else:
                ax.text(0.01, i, "missing", va="center", fontsize=7, color="tab:red")

    return _bars(labels, scores, out_png, 1.1, "main metric", title or "benchmark suite", "tab:blue", annotate)
