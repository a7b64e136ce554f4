"""The logits processors open_clip's ``CoCa.generate`` applies, as Hugging Face defines them
(``MinLengthLogitsProcessor``, ``RepetitionPenaltyLogitsProcessor``, ``TopKLogitsWarper``,
``TopPLogitsWarper``), on numpy rows of scores ``(N, vocab)`` given the tokens so far
``(N, length)``."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def min_length(tokens: np.ndarray, scores: np.ndarray, min_len: int, eos_ids: Sequence[int]) -> np.ndarray:
    """End of text forbidden (-inf) while the sequences are shorter than ``min_len``."""
    scores = scores.copy()
    if tokens.shape[-1] < min_len:
        scores[:, list(eos_ids)] = -np.inf
    return scores


def repetition_penalty(tokens: np.ndarray, scores: np.ndarray, penalty: float) -> np.ndarray:
    """Scores of tokens already present divided by ``penalty`` (multiplied when negative)."""
    if penalty == 1.0:
        return scores.copy()
    scores = scores.copy()
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, tokens]
    scores[rows, tokens] = np.where(seen < 0, seen * penalty, seen / penalty)
    return scores


def top_k(scores: np.ndarray, k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Scores below the ``k``-th largest of each row set to -inf."""
    k = min(max(int(k), min_tokens_to_keep), scores.shape[-1])
    kth = -np.sort(-scores, axis=-1)[:, k - 1:k]
    return np.where(scores < kth, -np.inf, scores).astype(scores.dtype)


def top_p(scores: np.ndarray, p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Nucleus filtering: in ascending order of score, tokens whose cumulative probability is
    at most ``1 - p`` set to -inf (the ``min_tokens_to_keep`` best always kept)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p has to be a float in (0, 1], got {p}")
    order = np.argsort(scores, axis=-1, kind="stable")
    ascending = np.take_along_axis(scores, order, axis=-1).astype(np.float32)
    shifted = np.exp(ascending - ascending.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(shifted / shifted.sum(axis=-1, keepdims=True), axis=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
