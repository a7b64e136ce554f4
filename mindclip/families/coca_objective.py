"""CoCa's training objective (open_clip's ``CoCaLoss``): ``clip`` weight x the contrastive loss
of the pooled features + ``caption`` weight x the cross-entropy of the decoder's next-token
logits against the caption shifted by one, padding ignored.

Split as every objective is (:class:`~mindclip.losses.Objective`): ``features`` gives per
sample the normalised features, the summed next-token loss and the number of tokens it
covers; ``loss`` the weighted terms of a whole batch. Gradient accumulation therefore caches
two numbers per sample instead of its vocabulary-wide logits, and gives open_clip's
``--accum-freq`` result: every micro-batch scored against all cached negatives, and the
caption loss the mean over all tokens of the full batch."""
from __future__ import annotations

from typing import Any, Dict, Optional

import mindspore as ms
from mindspore import nn, ops

from ..losses import ClipLoss, Objective
from ..models import cpu_kernels
from ..models.clip import l2_normalize

DEFAULT_WEIGHTS = {"clip": 1.0, "caption": 2.0}  # open_clip's --coca-*-loss-weight defaults


def _kept(labels, pad_id: int):
    return ops.not_equal(labels, pad_id).astype(ms.float32)


def caption_token_counts(labels, pad_id: int):
    """Labels per sample that are not ``pad_id``, float32 ``(B,)``."""
    return _kept(labels, pad_id).sum(axis=1)


class _RowNLL(nn.Cell):
    """``(logits (R, V) fp32, labels (R, 1) as fp32, keep (R, 1)) -> (logsumexp - picked logit)
    * keep``, ``(R, 1)``: MindSpore's ops, where the fused CPU kernel is not built."""

    def __init__(self):
        super().__init__()
        self.row_max = ops.ReduceMax(keep_dims=True)
        self.row_sum = ops.ReduceSum(keep_dims=True)
        self.gather = ops.GatherD()

    def construct(self, logits, labels, keep):
        top = self.row_max(logits, -1)
        lse = ops.log(self.row_sum(ops.exp(logits - top), -1)) + top
        return (lse - self.gather(logits, 1, labels.astype(ms.int32))) * keep


class _RowNLLGrad(nn.Cell):
    """``(logits (R, V) fp32, labels (R, 1) as fp32, scale (R, 1)) -> (softmax - one_hot) *
    scale``: MindSpore's ops, where the fused CPU kernel is not built."""

    def __init__(self):
        super().__init__()
        self.softmax = ops.Softmax(axis=-1)
        self.scatter_add = ops.TensorScatterElements(axis=1, reduction="add")

    def construct(self, logits, labels, scale):
        return self.scatter_add(self.softmax(logits) * scale, labels.astype(ms.int32), -scale)


class ProjectedCaptionNLL(nn.Cell):
    """Per sample, the summed next-token negative log-likelihood (``logsumexp - picked
    logit``) of the logits ``hidden @ weight`` (the decoder's vocabulary projection) over the
    labels that are not ``pad_id``: ``(hidden (B, L, D), weight (D, V), labels (B, L)) -> (B,)``
    float32. PyTorch's ``CrossEntropyLoss(ignore_index=pad_id)`` is its sum over the batch
    divided by :func:`caption_token_counts`' sum.

    Rows (sample x position) go through in chunks of ``chunk_rows``; the backward pass
    recomputes each chunk's logits and turns them into that chunk's ``dhidden`` and its share
    of ``dweight`` at once. So at most one chunk's logits are alive, instead of the several
    ``(B, L, V)`` tensors — logits, their fp32 copy, softmax, the scattered gradient — of a
    projection followed by a loss (0.48 GB each for CoCa ViT-B/32 at batch 32), for one more
    projection product in the backward pass. Chunks run in order (``depend``), so the graph
    cannot schedule two chunks' logits side by side. The gradient, ``(softmax - one_hot) *
    keep * dout``, is written by hand: differentiating ``log_softmax`` + ``gather_elements``
    kept several vocabulary-wide tensors alive and was ~3x slower on CPU.

    On CPU the rows' loss and its gradient from the fp32 logits are one fused kernel each
    (``CaptionNLLForward``/``Backward`` in :mod:`mindclip.models.cpu_kernels`): MindSpore's
    CPU kernels of the broadcasting ops (``logits - row max``, ``softmax * row scale``) each
    held ~4 logits-sized buffers until the step ended, whatever the chunk size (a gradient
    step of this loss alone at CoCa ViT-B/32's 32 x 76 rows peaked at 5.05 GB of process
    RSS, 1.22 GB with the kernels)."""

    def __init__(self, pad_id: int, chunk_rows: int = 256):
        super().__init__()
        self.pad_id = int(pad_id)
        self.chunk_rows = int(chunk_rows)
        self.matmul = ops.MatMul()
        self.matmul_nt = ops.MatMul(transpose_b=True)
        self.matmul_tn = ops.MatMul(transpose_a=True)
        self.concat = ops.Concat(axis=0)
        self.row_nll = cpu_kernels.custom_op("CaptionNLLForward", like=(2,)) or _RowNLL()
        self.row_nll_grad = cpu_kernels.custom_op("CaptionNLLBackward") or _RowNLLGrad()

    # construct and bprop share no helper: GRAPH mode cannot compile a function graph both call.
    def construct(self, hidden, weight, labels):
        b, n, d = hidden.shape
        h, y = hidden.reshape(b * n, d), labels.reshape(b * n, 1).astype(ms.float32)
        keep = _kept(labels, self.pad_id).reshape(b * n, 1)
        w, c = weight.astype(h.dtype), self.chunk_rows
        parts = []
        for start in range(0, b * n, c):
            end = start + c if start + c < b * n else b * n
            chunk = h[start:end] if not parts else ops.depend(h[start:end], parts[-1])
            logits = self.matmul(chunk, w).astype(ms.float32)
            parts.append(self.row_nll(logits, y[start:end], keep[start:end]).reshape(-1))
        return self.concat(parts).reshape(b, n).sum(axis=1)

    def bprop(self, hidden, weight, labels, out, dout):
        b, n, d = hidden.shape
        h, y = hidden.reshape(b * n, d), labels.reshape(b * n, 1).astype(ms.float32)
        # d(sum_t nll[b, t] keep[b, t]) / d logits[b, t] = (softmax - one_hot) keep[b, t]
        scale = (_kept(labels, self.pad_id) * dout.reshape(-1, 1)).reshape(b * n, 1)
        w, c = weight.astype(h.dtype), self.chunk_rows
        grads_h, grad_w = [], None
        for start in range(0, b * n, c):
            end = start + c if start + c < b * n else b * n
            chunk = h[start:end] if not grads_h else ops.depend(h[start:end], grads_h[-1])
            logits = self.matmul(chunk, w).astype(ms.float32)
            g = self.row_nll_grad(logits, y[start:end], scale[start:end]).astype(h.dtype)
            grads_h.append(self.matmul_nt(g, w))
            part = self.matmul_tn(chunk, g)
            grad_w = part if grad_w is None else grad_w + part
        dhidden = self.concat(grads_h).reshape(b, n, d).astype(hidden.dtype)
        return dhidden, grad_w.astype(weight.dtype), ops.zeros_like(labels)


class CoCaObjective(Objective):
    """``(images, tokens) -> (total, (contrastive, caption))``, each term already weighted."""

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
        self.caption_nll = ProjectedCaptionNLL(model.pad_id)
        self.pad_id = int(model.pad_id)

    def features(self, images, text):
        image_features, text_features, hidden = self.model.forward_hidden(images, text)
        labels = text[:, 1:]
        return (l2_normalize(image_features).astype(ms.float32),
                l2_normalize(text_features).astype(ms.float32),
                self.caption_nll(hidden, self.model.text_decoder.text_projection, labels),
                caption_token_counts(labels, self.pad_id))

    def loss(self, image_features, text_features, nll, counts):
        scale = ops.exp(self.model.logit_scale)
        contrastive = self.clip_weight * self.clip_loss(image_features, text_features, scale)
        caption = self.caption_weight * nll.sum() / ops.maximum(counts.sum(), 1.0)
        return contrastive + caption, (contrastive, caption)
