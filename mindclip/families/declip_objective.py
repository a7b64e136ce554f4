"""DeCLIP's objective and its nearest-neighbour memory (facts: ``shared/declip_reference``).

``total = w_clip·CLIP + w_simsiam·SimSiam + w_mlm·MLM + w_nn·NN`` over a two-view batch:

- CLIP: symmetric InfoNCE averaged over the 4 pairs (2 image views × {masked caption, EDA
  caption}); across data-parallel ranks each rank scores its rows against the gathered
  features (targets offset by rank), as DeCLIP does.
- SimSiam: ``-½(cos(p1, sg(z2)) + cos(p2, sg(z1)))`` on the local batch (BatchNorm per view).
- MLM: cross-entropy of the MLM head at the selected positions only (the head is applied
  there alone: B×K×V logits instead of B×L×V).
- NN: image -> nearest-neighbour-text InfoNCE, both captions and both views; neighbours come
  from a FIFO memory of earlier normalised text features, looked up before this batch is
  enqueued (first the EDA captions, then the masked ones).

The memory is two non-trainable Parameters (the bank and its pointer), updated inside the
jitted step and saved in training checkpoints, so a resumed run continues with the memory it
had (DeCLIP's own code restarts from random vectors on every resume).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..losses import Objective, make_gather
from ..models.clip import l2_normalize

TERMS = ("clip", "simsiam", "mlm", "nn")
DEFAULT_WEIGHTS = {"clip": 0.4, "simsiam": 0.2, "mlm": 0.2, "nn": 0.2}  # YFCC15M configs
LOGIT_SCALE_BOUNDS = (3.0, 6.0)  # DeCLIP's YFCC15M logit_scale_param_value
MAX_SCALE = 100.0


def declip_weights(weights: Optional[Dict[str, float]]) -> Dict[str, float]:
    """``loss.weights`` with DeCLIP's defaults for the terms it does not name."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown DeCLIP loss weight(s) {unknown}; valid: {list(TERMS)}")
    return {k: float(weights.get(k, DEFAULT_WEIGHTS[k])) for k in TERMS}


def _unit(x: Tensor, eps: float) -> Tensor:
    """``x / (||x|| + eps)`` (DeCLIP's normalisation; not F.normalize's max)."""
    return x / (ops.sqrt((x * x).sum(axis=-1, keepdims=True)) + eps)


def _diagonal_ce(logits: Tensor, offset: int) -> Tensor:
    """Mean over rows i of ``-log softmax(logits[i])[offset + i]``."""
    n = logits.shape[0]
    targets = ops.one_hot(ops.arange(n, dtype=ms.int32) + offset, logits.shape[1],
                          Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
    return -(ops.log_softmax(logits, axis=-1) * targets).sum(axis=-1).mean()


class NNMemory(nn.Cell):
    """FIFO memory of ``size`` unit vectors with DeCLIP's (lightly's) rules: the nearest
    neighbour is the row of highest cosine; an enqueue writes rows ``ptr..ptr+B-1``, and one
    that reaches the end writes only the rows that fit and restarts at 0 (no wrap-around)."""

    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        bank = np.random.default_rng(seed).standard_normal((size, dim)).astype(np.float32)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
        self.size = size
        self.bank = Parameter(Tensor(bank), name="nn_memory.bank", requires_grad=False)
        self.ptr = Parameter(Tensor(0, ms.int32), name="nn_memory.ptr", requires_grad=False)

    def lookup(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(neighbours / (||·|| + 1e-10), row indices)`` of the rows of ``x``."""
        sims = ops.matmul(l2_normalize(x), l2_normalize(self.bank * 1.0).T)
        index = sims.argmax(axis=-1).astype(ms.int32)
        return _unit(ops.gather(self.bank * 1.0, index, 0), 1e-10), index

    def enqueue(self, x: Tensor) -> Tensor:
        """Write ``x`` at the pointer; returns the new pointer (for ordering)."""
        b = x.shape[0]
        x = x.astype(ms.float32)
        slots = self.ptr + ops.arange(b, dtype=ms.int32)
        rows = slots % self.size
        # Rows past the end keep their value (rewritten with what they hold), so the
        # scatter indices stay distinct and the shapes static.
        kept = ops.gather(self.bank * 1.0, rows, 0)
        values = ops.where((slots < self.size).reshape(b, 1), x, kept)
        written = ops.scatter_update(self.bank, rows, values)
        end = self.ptr + b
        new_ptr = ops.where(end >= self.size, ops.zeros_like(end), end)
        return ops.depend(ops.assign(self.ptr, new_ptr), written)


class DeCLIPObjective(Objective):
    """``construct(view1, view2, tokens, mlm_positions, mlm_targets, tokens_aug)`` ->
    ``(total, (clip, simsiam, mlm, nn))``; see the module doc.

    Split for feature-cached accumulation: ``features`` gives per-sample tensors (raw image
    features of both views, unit text features of both captions, their memory neighbours,
    looked up before this batch is enqueued, and each sample's MLM cross-entropy sum and
    count); ``loss`` scores the whole batch (the SimSiam heads run there, so their BatchNorm
    normalises over the whole batch, as one large batch does); ``state_update`` enqueues the
    batch into the memory and moves the heads' BatchNorm statistics once per step."""

    updates_state = True

    def __init__(self, model: nn.Cell, weights: Dict[str, float], memory_size: int,
                 gather_with_grad: bool = True, rank: int = 0, world_size: int = 1,
                 logit_scale_bounds: Optional[Tuple[float, float]] = LOGIT_SCALE_BOUNDS,
                 memory_seed: int = 0):
        super().__init__(model, TERMS, logit_scale_bounds, clamp_before_step=True)
        self.weights = declip_weights(weights)
        self.rank = rank
        self.gather = make_gather(gather_with_grad, rank, world_size)
        self.gather_nn = make_gather(False, rank, world_size)  # neighbours carry no gradient
        self.memory = NNMemory(memory_size, model.embed_dim, memory_seed)
        # A plain list (not child cells): the heads' BatchNorm layers, whose moving statistics
        # ``loss`` puts back (see there).
        self.head_norms = [cell for head in (model.projector, model.predictor)
                           for _, cell in head.cells_and_names() if isinstance(cell, nn.BatchNorm1d)]

    def _all(self, x: Tensor, gather) -> Tensor:
        return x if gather is None else gather(x)

    def _pair(self, image: Tensor, text: Tensor, scale: Tensor) -> Tensor:
        n = image.shape[0]
        offset = self.rank * n
        per_image = scale * ops.matmul(image, self._all(text, self.gather).T)
        per_text = scale * ops.matmul(text, self._all(image, self.gather).T)
        return (_diagonal_ce(per_image, offset) + _diagonal_ce(per_text, offset)) / 2

    def _to_nn(self, image: Tensor, neighbours: Tensor, scale: Tensor) -> Tensor:
        logits = scale * ops.matmul(image, self._all(neighbours, self.gather_nn).T)
        return _diagonal_ce(logits, self.rank * image.shape[0])

    def mlm_terms(self, token_features: Tensor, positions: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        """Per sample: the MLM head's cross-entropy summed over its selected positions
        (targets != -100), and their count; the term is ``sum / max(count, 1)`` over the batch."""
        b, k = positions.shape
        width = token_features.shape[-1]
        index = ops.broadcast_to(positions.reshape(b, k, 1), (b, k, width))
        picked = ops.gather_elements(token_features, 1, index)  # (B, K, width)
        logits = self.model.mlm_logits(picked).astype(ms.float32)
        valid = (targets >= 0).astype(ms.float32)
        target = ops.maximum(targets, 0)
        log_probs = ops.log_softmax(logits, axis=-1)
        picked_lp = ops.gather_elements(log_probs, 2, target.reshape(b, k, 1)).reshape(b, k)
        return -(picked_lp * valid).sum(axis=1), valid.sum(axis=1)

    def features(self, view1, view2, tokens, mlm_positions, mlm_targets, tokens_aug):
        model = self.model
        f1 = model.image_features(view1).astype(ms.float32)
        f2 = model.image_features(view2).astype(ms.float32)
        text, token_features = model.encode_text_tokens(tokens)
        t = _unit(text.astype(ms.float32), 1e-10)
        ta = _unit(model.text_features(tokens_aug).astype(ms.float32), 1e-10)
        nn_t, _ = self.memory.lookup(ops.stop_gradient(t))
        nn_a, _ = self.memory.lookup(ops.stop_gradient(ta))
        mlm_sum, mlm_count = self.mlm_terms(token_features, mlm_positions, mlm_targets)
        return f1, f2, t, ta, ops.stop_gradient(nn_t), ops.stop_gradient(nn_a), mlm_sum, mlm_count

    def _total(self, f1, f2, t, ta, nn_t, nn_a, mlm_sum, mlm_count):
        model = self.model
        z1, p1 = model.simsiam(f1)
        z2, p2 = model.simsiam(f2)
        i1, i2 = _unit(f1, 0.0), _unit(f2, 0.0)
        scale = ops.minimum(ops.exp(model.logit_scale), MAX_SCALE)
        clip = (self._pair(i1, t, scale) + self._pair(i2, t, scale)
                + self._pair(i1, ta, scale) + self._pair(i2, ta, scale)) / 4
        nn_loss = (self._to_nn(i1, nn_t, scale) + self._to_nn(i1, nn_a, scale)
                   + self._to_nn(i2, nn_t, scale) + self._to_nn(i2, nn_a, scale)) / 4
        simsiam = -(_cosine(p1, ops.stop_gradient(z2)) + _cosine(p2, ops.stop_gradient(z1))) / 2
        mlm = mlm_sum.sum() / ops.maximum(mlm_count.sum(), 1.0)
        w = self.weights
        total = (w["clip"] * clip + w["simsiam"] * simsiam + w["mlm"] * mlm + w["nn"] * nn_loss)
        return total, (clip, simsiam, mlm, nn_loss)

    def _enqueue(self, t, ta, nn_t, nn_a):
        """The batch's caption features into the memory (EDA captions first, then the masked
        ones), after its neighbours were looked up."""
        first = self.memory.enqueue(ops.stop_gradient(ops.depend(ta, (nn_t, nn_a))))
        return self.memory.enqueue(ops.stop_gradient(ops.depend(t, first)))

    def construct(self, *batch):
        features = self.features(*batch)
        total, terms = self._total(*features)
        return ops.depend(total, self._enqueue(*features[2:6])), terms

    def loss(self, *features):
        # Under accumulation this runs once per micro-batch on the whole batch; the moving
        # BatchNorm statistics it moves are put back, and state_update moves them once.
        saved = [(norm.moving_mean * 1.0, norm.moving_variance * 1.0) for norm in self.head_norms]
        # the heads' BatchNorm writes its statistics in place: not before the copies are taken
        total, terms = self._total(*[ops.depend(f, saved) for f in features])
        restored = [(ops.assign(norm.moving_mean, ops.depend(mean, total)),
                     ops.assign(norm.moving_variance, ops.depend(var, total)))
                    for norm, (mean, var) in zip(self.head_norms, saved)]
        return ops.depend(total, restored), terms

    def state_update(self, f1, f2, t, ta, nn_t, nn_a, mlm_sum, mlm_count):
        """Once per accumulated step, on the whole batch's cached features: the memory's
        enqueue, and the SimSiam heads run as the step's forward runs them (view 1, then view
        2), which moves their BatchNorm statistics as one large batch does."""
        heads = (self.model.simsiam(f1), self.model.simsiam(f2))
        return ops.depend(self._enqueue(t, ta, nn_t, nn_a), heads)

    def loss_parameter_names(self) -> Tuple[str, ...]:
        """The temperature and the SimSiam heads: ``loss`` alone reads them."""
        heads = tuple(p.name for head in (self.model.projector, self.model.predictor)
                      for p in head.trainable_params())
        return super().loss_parameter_names() + heads


def _cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean over rows of the cosine of ``p`` and ``z`` (F.normalize, eps 1e-12)."""
    return (l2_normalize(p.astype(ms.float32)) * l2_normalize(z.astype(ms.float32))).sum(axis=-1).mean()
