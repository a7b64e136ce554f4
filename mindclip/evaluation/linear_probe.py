"""Linear probe as CLIP_benchmark runs it: a logistic-regression head on frozen, normalised
image features, trained with PyTorch's AdamW (betas 0.9/0.999, eps 1e-8, decay on weight and
bias) and a cosine learning rate without warmup, per step, over shuffled mini-batches; with a
validation set, the weight decay is searched over ``logspace(-6, 2, 97)`` (7 coarse points,
then refined around the best) and the final head trained on train + validation.

Features are cached by the caller (the suite encodes each split once); the head trains in
MindSpore, one compiled step for every batch.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import ops

from .metrics import benchmark_classification_metrics

WEIGHT_DECAYS = np.logspace(-6, 2, num=97).tolist()
COARSE = list(range(0, 97, 16))  # the 7 points of logspace(-6, 2, 7) within WEIGHT_DECAYS
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults


def _loss(weight, bias, x, y):
    return ops.cross_entropy(ops.matmul(x, weight.T) + bias, y)


_grad = ms.grad(_loss, grad_position=(0, 1))


@ms.jit
def _step(weight, bias, m_w, v_w, m_b, v_b, x, y, lr, decay, step):
    """One AdamW step (torch's update order: decoupled decay, then the bias-corrected moment)."""
    g_w, g_b = _grad(weight, bias, x, y)
    out = []
    for p, g, m, v in ((weight, g_w, m_w, v_w), (bias, g_b, m_b, v_b)):
        p = p * (1 - lr * decay)
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * g * g
        denom = ops.sqrt(v / (1 - BETA2 ** step)) + EPS
        out.append((p - lr / (1 - BETA1 ** step) * m / denom, m, v))
    (weight, m_w, v_w), (bias, m_b, v_b) = out
    return weight, bias, m_w, v_w, m_b, v_b


def train_head(features: np.ndarray, labels: np.ndarray, num_classes: int, weight_decay: float, lr: float,
               epochs: int, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(weight (C, D), bias (C,))`` of the head trained as CLIP_benchmark's ``train``."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(features.shape[1])  # torch.nn.Linear's initial range
    weight = ms.Tensor(rng.uniform(-bound, bound, (num_classes, features.shape[1])).astype(np.float32))
    bias = ms.Tensor(rng.uniform(-bound, bound, (num_classes,)).astype(np.float32))
    m_w, v_w, m_b, v_b = (ops.zeros_like(t) for t in (weight, weight, bias, bias))
    n = len(features)
    per_epoch = -(-n // batch_size)
    total = epochs * per_epoch
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for i in range(per_epoch):
            step = epoch * per_epoch + i
            rate = 0.5 * (1 + math.cos(math.pi * step / total)) * lr
            rows = order[i * batch_size:(i + 1) * batch_size]
            weight, bias, m_w, v_w, m_b, v_b = _step(
                weight, bias, m_w, v_w, m_b, v_b, ms.Tensor(features[rows]), ms.Tensor(labels[rows].astype(np.int32)),
                ms.Tensor(rate, ms.float32), ms.Tensor(weight_decay, ms.float32), ms.Tensor(step + 1, ms.float32))
    return weight.asnumpy(), bias.asnumpy()


def _accuracy(head: Tuple[np.ndarray, np.ndarray], features: np.ndarray, labels: np.ndarray) -> float:
    weight, bias = head
    return float(((features @ weight.T + bias).argmax(axis=1) == labels).mean())


def few_shot(labels: np.ndarray, k: int, seed: int) -> Optional[np.ndarray]:
    """Indices of ``k`` samples per class in a seeded order (all with ``k < 0``); None when a
    class has fewer than ``k``."""
    order = np.random.default_rng(seed).permutation(len(labels))
    if k < 0:
        return order
    chosen, counts = [], {}
    for i in order:
        c = int(labels[i])
        if counts.get(c, 0) < k:
            counts[c] = counts.get(c, 0) + 1
            chosen.append(i)
    return np.array(chosen) if all(v == k for v in counts.values()) else None


def linear_probe(train: Tuple[np.ndarray, np.ndarray], test: Tuple[np.ndarray, np.ndarray],
                 val: Optional[Tuple[np.ndarray, np.ndarray]] = None, fewshot_k: int = -1, lr: float = 0.1,
                 epochs: int = 10, batch_size: int = 64, seed: int = 0) -> Dict:
    """CLIP_benchmark's linear-probe metrics (``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall``,
    ``weight_decay``...) of (features, labels) splits; features L2-normalised by the caller."""
    (x, y), (x_test, y_test) = train, test
    picked = few_shot(y, fewshot_k, seed)
    if picked is None:
        raise ValueError(f"linear probe: a class has fewer than fewshot_k={fewshot_k} training samples")
    x, y = x[picked], y[picked]
    num_classes = int(max(y.max(), y_test.max(), val[1].max() if val else 0)) + 1

    def fit(decay, fx, fy):
        return train_head(fx, fy, num_classes, decay, lr, epochs, batch_size, seed)

    best = 0.0
    if val is not None:
        def peak(candidates, best_idx):
            top = 0.0
            for idx in candidates:  # the first of equal accuracies wins, from index 0 (CLIP_benchmark's)
                acc = _accuracy(fit(WEIGHT_DECAYS[idx], x, y), *val)
                if top < acc:
                    best_idx, top = idx, acc
            return best_idx

        idx = peak(COARSE, 0)
        span = 8
        while span > 0:
            idx = peak([max(idx - span, 0), idx, min(idx + span, len(WEIGHT_DECAYS) - 1)], 0)
            span //= 2
        best = WEIGHT_DECAYS[idx]
        if fewshot_k < 0:
            x, y = np.concatenate([x, val[0]]), np.concatenate([y, val[1]])
    weight, bias = fit(best, x, y)
    logits = x_test @ weight.T + bias
    metrics = benchmark_classification_metrics(logits, y_test)
    if y_test.max() < 5:  # CLIP_benchmark's condition for top-5
        metrics["acc5"] = float("nan")
    return {"lp_acc1": metrics["acc1"], "lp_acc5": metrics["acc5"],
            "lp_mean_per_class_recall": metrics["mean_per_class_recall"], "weight_decay": best,
            "epochs": epochs, "seed": seed, "fewshot_k": fewshot_k, "normalized": True}


def split_validation(features: np.ndarray, labels: np.ndarray, proportion: float,
                     seed: int) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """A seeded random ``(train, val)`` split of a training set (CLIP_benchmark's ``--val_proportion``)."""
    order = np.random.default_rng([seed, 1]).permutation(len(labels))
    n_val = int(round(len(labels) * proportion))
    val, train = order[:n_val], order[n_val:]
    return (features[train], labels[train]), (features[val], labels[val])
