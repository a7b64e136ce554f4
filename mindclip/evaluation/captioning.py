"""Captioning metrics as the COCO caption evaluation computes them: BLEU-1..4, CIDEr-D and
ROUGE-L from ``pycocoevalcap``'s scorers. The texts are tokenized in Python (lower case,
punctuation removed) instead of by the Java PTB tokenizer; METEOR and SPICE need Java and are
left out."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

_PUNCT = re.compile(r"[^\w\s']|_")


def tokenize(text: str) -> str:
    """Lower case, punctuation removed, single spaces (what the PTB tokenizer step leaves)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> Dict[str, float]:
    """Corpus scores of one candidate per image against its reference captions."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise ImportError("caption metrics need pycocoevalcap (pip install pycocoevalcap, or "
                          'pip install -e ".[caption]")') from None
    if len(references) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} images")
    gts = {i: [tokenize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [tokenize(c)] for i, c in enumerate(candidates)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    out = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, 1)}
    out.update({"CIDEr-D": float(cider), "ROUGE-L": float(rouge)})
    return out


def generate_captions(model: Any, tokenizer: Any, loader, generation: Dict[str, Any]):
    """``(sample indices, captions)`` of every readable image of an evaluation loader of a
    caption source (batches of ``(images, indices)``)."""
    from ..generation import decode_captions

    indices: List[int] = []
    captions: List[str] = []
    for images, index in loader:
        ids = model.generate(images, **generation)
        captions.extend(decode_captions(tokenizer, ids))
        indices.extend(int(i) for i in index)
    return indices, captions
