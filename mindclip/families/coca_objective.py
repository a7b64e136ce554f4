"""CoCa's training objective (open_clip's ``CoCaLoss``): ``clip`` weight x the contrastive loss
of the pooled features + ``caption`` weight x the cross-entropy of the decoder's next-token
logits against the caption shifted by one, padding ignored."""
from __future__ import annotations

from typing import Any, Dict, Optional

import mindspore as ms
from mindspore import nn, ops

from ..losses import ClipLoss, Objective
from ..models.clip import l2_normalize

DEFAULT_WEIGHTS = {"clip": 1.0, "caption": 2.0}  # open_clip's --coca-*-loss-weight defaults


class CaptionCrossEntropy(nn.Cell):
    """Mean next-token cross-entropy over the labels that are not ``pad_id`` (PyTorch's
    ``CrossEntropyLoss(ignore_index=pad_id)``), in fp32, ``logsumexp - picked logit``.

    Its gradient, ``(softmax - one_hot) * keep / count``, is written by hand: differentiating
    ``log_softmax`` + ``gather_elements`` keeps several vocabulary-wide tensors alive and takes
    most of a small CoCa's train step on CPU (0.87 s of forward + backward for 64 x 15 x 49408
    logits, against ~0.3 s this way)."""

    def __init__(self, pad_id: int):
        super().__init__()
        self.pad_id = int(pad_id)

    def _keep(self, labels):
        keep = ops.not_equal(labels, self.pad_id).astype(ms.float32)
        return keep, ops.maximum(keep.sum(), 1.0)

    def construct(self, logits, labels):
        keep, count = self._keep(labels)
        logp = ops.log_softmax(logits.astype(ms.float32), axis=-1)
        picked = ops.gather_elements(logp, 2, labels.reshape(labels.shape + (1,))).squeeze(-1)
        return -(picked * keep).sum() / count

    def bprop(self, logits, labels, out, dout):
        keep, count = self._keep(labels)
        weight = (keep * (dout / count)).reshape(keep.shape + (1,))
        grad = ops.softmax(logits.astype(ms.float32), axis=-1) * weight
        index = labels.reshape(labels.shape + (1,))
        grad = ops.tensor_scatter_elements(grad, index, -weight, axis=2, reduction="add")
        return grad.astype(logits.dtype), ops.zeros_like(labels)


def caption_cross_entropy(logits, labels, pad_id: int):
    """:class:`CaptionCrossEntropy` as a function (tests, one-off calls)."""
    return CaptionCrossEntropy(pad_id)(logits, labels)


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
        self.caption_loss = CaptionCrossEntropy(model.pad_id)

    def construct(self, images, text):
        image_features, text_features, logits = self.model.forward_features(images, text)
        scale = ops.exp(self.model.logit_scale)
        contrastive = self.clip_weight * self.clip_loss(
            l2_normalize(image_features).astype(ms.float32),
            l2_normalize(text_features).astype(ms.float32), scale)
        caption = self.caption_weight * self.caption_loss(logits, text[:, 1:])
        return contrastive + caption, (contrastive, caption)
