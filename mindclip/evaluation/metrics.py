"""Ranking metrics for zero-shot classification and image-text retrieval (numpy).

Ties count against the model: the rank of the correct item is one plus the number of wrong
candidates scoring at least as high, so a constant model never looks good.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def ranks_of(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of ``scores[i, positive[i]]`` within row ``i``."""
    pos_scores = scores[np.arange(len(scores)), positive]
    return (scores >= pos_scores[:, None]).sum(axis=1)  # counts the positive itself once


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                           top_k: Sequence[int] = (1, 5)) -> Dict[str, object]:
    """Top-k accuracies (%), per-class top-1 accuracy (%) and its mean."""
    labels = np.asarray(labels)
    ranks = ranks_of(logits, labels)
    out: Dict[str, object] = {f"top{k}": float((ranks <= k).mean() * 100) for k in top_k
                              if k <= logits.shape[1]}
    per_class = {}
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            per_class[name] = float((ranks[mask] == 1).mean() * 100)
    out["per_class_top1"] = per_class
    out["mean_per_class_top1"] = float(np.mean(list(per_class.values()))) if per_class else 0.0
    out["num_samples"] = int(len(labels))
    return out


def retrieval_metrics(image_features: np.ndarray, text_features: np.ndarray,
                      text_to_image: Sequence, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Image->text and text->image recall@K (%), mean/median rank and mean recalls.

    ``text_to_image[j]`` is the image of text ``j``, or the list of images it describes (a
    caption shared by several images, e.g. "a photo of the number seven." for every seven).
    A query's rank is that of its best-scoring positive, ties counted against the model.
    """
    sims = image_features @ text_features.T  # (images, texts)
    positive = np.zeros(sims.shape, bool)
    for j, owners in enumerate(text_to_image):
        positive[np.atleast_1d(np.asarray(owners, np.int64)), j] = True
    if not positive.any(axis=1).all():
        raise ValueError(f"image {int(np.flatnonzero(~positive.any(axis=1))[0])} has no caption")

    def best_positive_ranks(scores: np.ndarray, pos: np.ndarray) -> np.ndarray:
        best = np.where(pos, scores, -np.inf).max(axis=1, keepdims=True)
        return 1 + ((scores >= best) & ~pos).sum(axis=1)

    i2t = best_positive_ranks(sims, positive)
    t2i = best_positive_ranks(sims.T, positive.T)
    out: Dict[str, float] = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{name}_R@{k}"] = float((ranks <= k).mean() * 100)
        out[f"{name}_mean_rank"] = float(ranks.mean())
        out[f"{name}_median_rank"] = float(np.median(ranks))
        out[f"{name}_mean_recall"] = float(np.mean([out[f"{name}_R@{k}"] for k in ks]))
    out["mean_recall"] = (out["image_to_text_mean_recall"] + out["text_to_image_mean_recall"]) / 2
    out["num_images"] = float(len(image_features))
    out["num_texts"] = float(len(text_features))
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum for stability."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def topk_labels(probs: np.ndarray, class_names: List[str], k: int) -> List[List[Dict[str, object]]]:
    """Per row, the ``k`` best ``{"score", "label"}`` sorted by score (stable on ties)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"score": float(row[j]), "label": class_names[j]} for j in idx]
            for row, idx in zip(probs, order)]


def benchmark_classification_metrics(logits: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """CLIP_benchmark's zero-shot keys and scale (fractions): ``acc1``, ``acc5`` (NaN with
    fewer than 5 classes) and ``mean_per_class_recall`` (the mean recall of the classes that
    have samples, scikit-learn's balanced accuracy of the arg-max)."""
    labels = np.asarray(labels)
    ranks = ranks_of(logits, labels)
    predicted = logits.argmax(axis=1)
    recalls = [float((predicted[labels == c] == c).mean()) for c in np.unique(labels)]
    return {"acc1": float((ranks <= 1).mean()),
            "acc5": float((ranks <= 5).mean()) if logits.shape[1] >= 5 else float("nan"),
            "mean_per_class_recall": float(np.mean(recalls))}


# The table's group metrics, as DataComp's evaluators compute them (WILDS' metric objects):
# name -> (top-k, metadata column grouped by). The worst group is the lowest mean over the
# groups with samples; column 0 is FMoW's and GeoDE's region, Dollar Street's income group.
WORST_GROUP_METRICS = {"acc_wg": (1, 0), "acc_top5_wg": (5, 0), "acc_worst_region": (1, 0),
                       "acc_worst_year": (1, 1)}
MACRO_F1 = "F1-macro_all"  # iWildCam's: WILDS' F1(average="macro") over the labels present
GROUP_METRICS = tuple(WORST_GROUP_METRICS) + (MACRO_F1,)


def benchmark_group_metric(name: str, logits: np.ndarray, labels: np.ndarray,
                           metadata: Optional[np.ndarray]) -> float:
    """One of :data:`GROUP_METRICS` of zero-shot ``logits``; ``metadata`` ``(N, fields)``
    holds the integer group of each sample (the dataset's ``.npy`` members)."""
    labels = np.asarray(labels)
    if name == MACRO_F1:
        from sklearn.metrics import f1_score

        return float(f1_score(labels, logits.argmax(axis=1), average="macro", labels=np.unique(labels)))
    k, column = WORST_GROUP_METRICS[name]
    if metadata is None or metadata.shape[1] <= column:
        raise ValueError(f"{name} groups samples by metadata field {column}: the dataset needs per-sample "
                         f".npy metadata with more than {column} field(s)"
                         + ("" if metadata is None else f" (it has {metadata.shape[1]})"))
    correct = (ranks_of(logits, labels) <= k).astype(np.float64)
    groups = metadata[:, column]
    counts = np.bincount(groups)
    means = np.bincount(groups, weights=correct)[counts > 0] / counts[counts > 0]
    return float(means.min())


def benchmark_retrieval_metrics(image_features: np.ndarray, text_features: np.ndarray,
                                text_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """CLIP_benchmark's retrieval keys and scale: every caption is its own text with its one
    image. ``image_retrieval_recall@k``: the share of texts whose image is among the k best
    images; ``text_retrieval_recall@k``: the share of images with one of their captions among
    the k best texts. Ties count against the model."""
    text_image = np.asarray(text_image, np.int64)
    scores = text_features @ image_features.T  # (texts, images)
    image_rank = ranks_of(scores, text_image)
    positive = np.zeros(scores.shape, bool)
    positive[np.arange(len(text_image)), text_image] = True
    by_image, pos = scores.T, positive.T
    best = np.where(pos, by_image, -np.inf).max(axis=1, keepdims=True)
    text_rank = 1 + ((by_image >= best) & ~pos).sum(axis=1)
    out: Dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float((image_rank <= k).mean())
        out[f"text_retrieval_recall@{k}"] = float((text_rank <= k).mean())
    return out
