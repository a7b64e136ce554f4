"""What the training loader produces per sample for a model family, besides the image.

A family's ``build_batch`` returns a :class:`SampleBuilder`; the loader calls it once per
sample with the chosen caption and a generator seeded by ``(seed, epoch, sample)``, so any
random text augmentation (caption EDA, MLM masking) is reproducible on resume. The train
step receives the image batch followed by these columns, in ``columns`` order.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np


class SampleBuilder:
    """Tokenized caption columns: a processor returning one id array gives one column, one
    returning a dict (``input_ids``, ``attention_mask``) gives one column per key.
    ``views``: augmented views of each image the loader produces before the text columns."""

    views = 1

    def __init__(self, processor: Callable, columns: Sequence[str] = ("tokens",)):
        self.processor = processor
        self.columns = tuple(columns)

    def __call__(self, caption: str, rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        del rng  # plain tokenization draws nothing
        out = self.processor([caption])
        arrays = tuple(out.values()) if isinstance(out, dict) else (out,)
        if len(arrays) != len(self.columns):
            raise ValueError(f"the text processor returned {len(arrays)} arrays for the "
                             f"{len(self.columns)} columns {self.columns}")
        return tuple(np.asarray(a)[0] for a in arrays)
