"""CoCa's training objective (open_clip's ``CoCaLoss``): ``clip`` weight x the contrastive loss
of the pooled features + ``caption`` weight x the cross-entropy of the decoder's next-token
logits against the caption shifted by one, padding ignored."""
from __future__ import annotations

from typing import Any, Dict, Optional

import mindspore as ms
from mindspore import ops

from ..losses import ClipLoss, Objective
from ..models.clip import l2_normalize

DEFAULT_WEIGHTS = {"clip": 1.0, "caption": 2.0}  # open_clip's --coca-*-loss-weight defaults


def caption_cross_entropy(logits, labels, pad_id: int):
    """Mean next-token cross-entropy over the labels that are not ``pad_id`` (PyTorch's
    ``CrossEntropyLoss(ignore_index=pad_id)``), computed in fp32."""
    logp = ops.log_softmax(logits.astype(ms.float32), axis=-1)
    nll = -ops.gather_elements(logp, 2, labels.reshape(labels.shape + (1,))).squeeze(-1)
    keep = ops.not_equal(labels, pad_id).astype(ms.float32)
    return (nll * keep).sum() / ops.maximum(keep.sum(), 1.0)


class CoCaObjective(Objective):
    """``(images, tokens) -> (total, (contrastive, caption))``, each term already weighted."""

    # the per-sample logits (L x vocab each) are too large to cache across micro-batches
    supports_accumulation = False

    def __init__(self, model: Any, weights: Optional[Dict[str, float]], local_loss: bool,
                 gather_with_grad: bool, rank: int, world: int, bounds):
        super().__init__(model, ("contrastive", "caption"), bounds)
        weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"loss.weights {unknown}: CoCa's terms are {sorted(DEFAULT_WEIGHTS)}")
        self.clip_weight = float(weights["clip"])
        self.caption_weight = float(weights["caption"])
        self.clip_loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad,
                                  rank=rank, world_size=world)
        self.pad_id = int(model.pad_id)

    def construct(self, images, text):
        image_features, text_features, logits = self.model.forward_features(images, text)
        scale = ops.exp(self.model.logit_scale)
        contrastive = self.clip_weight * self.clip_loss(
            l2_normalize(image_features).astype(ms.float32),
            l2_normalize(text_features).astype(ms.float32), scale)
        caption = self.caption_weight * caption_cross_entropy(logits, text[:, 1:], self.pad_id)
        return contrastive + caption, (contrastive, caption)
