"""Training objectives of the model families, and the contrastive losses they use: CLIP's
symmetric InfoNCE and SigLIP's pairwise sigmoid loss.

An :class:`Objective` is what the train step differentiates: it holds the model, maps a
training batch to per-sample features and features to the total loss plus its named terms.

Across data-parallel ranks the features are all-gathered. MindSpore's AllGather has no CPU
backward (it needs ReduceScatter), so :class:`GatherWithGrad` defines its own: the gradient
of a gathered tensor is summed over ranks (AllReduce) and each rank keeps its own slice,
which is exactly ReduceScatter's result.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from .models.clip import MAX_LOGIT_SCALE, l2_normalize
from .registry import register


def distributed_info():
    """``(rank, world_size)`` of the running job; ``(0, 1)`` outside a distributed launch."""
    from mindspore.communication import GlobalComm

    if not GlobalComm.INITED:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank

    return get_rank(), get_group_size()


class GatherWithGrad(nn.Cell):
    """AllGather along axis 0 whose backward returns this rank's slice of the summed gradient."""

    def __init__(self, rank: int, world_size: int):
        super().__init__()
        self.rank = rank
        self.world_size = world_size
        self.all_gather = ops.AllGather()
        self.all_reduce = ops.AllReduce()

    def construct(self, x):
        return self.all_gather(x)

    def bprop(self, x, out, dout):
        n = x.shape[0]
        full = self.all_reduce(dout)
        return (full[self.rank * n:(self.rank + 1) * n],)


class GatherNoGrad(nn.Cell):
    """AllGather whose own rank's slice is the local (differentiable) tensor, as open_clip
    does without ``gather_with_grad``: gradients only reach the local features."""

    def __init__(self, rank: int, world_size: int):
        super().__init__()
        self.rank = rank
        self.world_size = world_size
        self.all_gather = ops.AllGather()

    def construct(self, x):
        n = x.shape[0]
        gathered = ops.stop_gradient(self.all_gather(x))
        # Empty slices are avoided: the rank is a compile-time constant.
        if self.rank == 0:
            return ops.concat((x, gathered[n:]), axis=0)
        if self.rank == self.world_size - 1:
            return ops.concat((gathered[:self.rank * n], x), axis=0)
        return ops.concat((gathered[:self.rank * n], x, gathered[(self.rank + 1) * n:]), axis=0)


def make_gather(gather_with_grad: bool, rank: int, world_size: int):
    if world_size <= 1:
        return None
    return (GatherWithGrad if gather_with_grad else GatherNoGrad)(rank, world_size)


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return -(ops.log_softmax(logits, axis=-1) * targets).sum(axis=-1).mean()


@register("loss", "clip")
class ClipLoss(nn.Cell):
    """Symmetric cross-entropy over image-text similarity logits (open_clip's ``ClipLoss``).

    ``local_loss``: each rank scores its own samples against all gathered ones (labels
    offset by rank); otherwise every rank computes the full global loss.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True,
                 rank: int = None, world_size: int = None):
        super().__init__()
        if rank is None or world_size is None:
            rank, world_size = distributed_info()
        self.rank, self.world_size = rank, world_size
        self.local_loss = local_loss
        self.gather = make_gather(gather_with_grad, rank, world_size)

    def construct(self, image_features, text_features, logit_scale):
        image_features = image_features.astype(ms.float32)
        text_features = text_features.astype(ms.float32)
        n = image_features.shape[0]
        offset = 0
        if self.gather is not None:
            all_image = self.gather(image_features)
            all_text = self.gather(text_features)
            if self.local_loss:
                logits_per_image = logit_scale * ops.matmul(image_features, all_text.T)
                logits_per_text = logit_scale * ops.matmul(text_features, all_image.T)
                offset = self.rank * n
            else:
                logits_per_image = logit_scale * ops.matmul(all_image, all_text.T)
                logits_per_text = logits_per_image.T
                n = all_image.shape[0]
        else:
            logits_per_image = logit_scale * ops.matmul(image_features, text_features.T)
            logits_per_text = logits_per_image.T
        targets = ops.one_hot(ops.arange(n, dtype=ms.int32) + offset, logits_per_image.shape[1],
                              Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        return (_soft_cross_entropy(logits_per_image, targets)
                + _soft_cross_entropy(logits_per_text, targets)) / 2


@register("loss", "siglip")
class SigLipLoss(nn.Cell):
    """Pairwise sigmoid loss (SigLIP; open_clip's ``SigLipLoss``) under the model's learned
    scale and bias: every image against every text of the global batch, its own caption the
    one positive. The text features of all ranks are all-gathered (open_clip exchanges them
    between neighbours instead; the loss and its gradients are the same)."""

    INIT_LOGIT_SCALE = math.log(10.0)

    def __init__(self, gather_with_grad: bool = True, rank: int = None, world_size: int = None,
                 local_loss: bool = True):
        super().__init__()
        if rank is None or world_size is None:
            rank, world_size = distributed_info()
        self.rank, self.world_size = rank, world_size
        self.gather = make_gather(gather_with_grad, rank, world_size)

    def construct(self, image_features, text_features, logit_scale, logit_bias):
        image_features = image_features.astype(ms.float32)
        text_features = text_features.astype(ms.float32)
        n = image_features.shape[0]
        all_text = self.gather(text_features) if self.gather is not None else text_features
        logits = logit_scale * ops.matmul(image_features, all_text.T) + logit_bias
        positives = ops.one_hot(ops.arange(n, dtype=ms.int32) + self.rank * n, all_text.shape[0],
                                Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        labels = 2 * positives - 1
        z = labels * logits
        # log(sigmoid(z)), stable for large |z|
        log_sigmoid = ops.minimum(z, 0.0) - ops.log1p(ops.exp(-ops.abs(z)))
        return -log_sigmoid.sum() / n


class Objective(nn.Cell):
    """A family's training loss: ``construct(*batch) -> (total, terms)``.

    ``batch`` is what the family's training loader yields (images, then its text columns).
    Split in two so that the train step can accumulate gradients with open_clip's feature
    caching for any family: ``features(*batch)`` returns per-sample tensors (axis 0 is the
    batch) and ``loss(*features)`` the total and a tuple of terms named by ``term_names``.
    A family with per-batch state (a memory queue, BatchNorm statistics of heads the loss
    runs) sets ``updates_state``: ``loss`` then leaves the state as it found it and
    ``state_update(*features)`` moves it once per step, on the whole batch's features, while
    ``construct`` does both. One whose loss cannot be split at all sets
    ``supports_accumulation = False`` and may override ``construct``.

    Attributes:
        term_names: names of the terms, logged separately.
        logit_scale_bounds: ``(low, high)`` the model's ``logit_scale`` is clamped to after
            each optimizer step (CLIP: ``(0, ln 100)``), or None for no clamp.
        clamp_before_step: also clamp after the gradients, before the optimizer step
            (DeCLIP's rule: the forward sees the raw value).
    """

    supports_accumulation = True
    updates_state = False

    def __init__(self, model: nn.Cell, term_names: Sequence[str],
                 logit_scale_bounds: Optional[Tuple[float, float]] = None,
                 clamp_before_step: bool = False):
        # auto_prefix=False keeps the model's parameter names (and checkpoints) unchanged.
        super().__init__(auto_prefix=False)
        self.model = model
        self.term_names = tuple(term_names)
        self.logit_scale_bounds = (None if logit_scale_bounds is None
                                   else (float(logit_scale_bounds[0]), float(logit_scale_bounds[1])))
        self.clamp_before_step = bool(clamp_before_step)

    def features(self, *batch):
        raise NotImplementedError

    def loss(self, *features):
        raise NotImplementedError

    def state_update(self, *features):
        """The per-batch state's update from the whole batch's features (``updates_state``)."""
        raise NotImplementedError

    def construct(self, *batch):
        return self.loss(*self.features(*batch))

    def loss_parameter_names(self) -> Tuple[str, ...]:
        """Parameters that ``loss`` reads and ``features`` does not (the temperature and bias
        of the contrastive losses). Under accumulation every micro-batch's loss sees the whole
        batch, so their gradient is taken from one micro-batch, not summed over all of them
        (open_clip's ``--accum-freq`` counts it once per micro-batch)."""
        return tuple(name for name in ("logit_scale", "logit_bias") if hasattr(self.model, name))

    def extra_parameters(self) -> List[Parameter]:
        """Parameters of the objective beyond the model's (trainable ones such as SigLIP's
        bias, and state such as a memory bank): saved in training checkpoints."""
        own = {p.name for p in self.model.get_parameters()}
        return [p for p in self.get_parameters() if p.name not in own]


def logit_scale_bounds(option, default: Optional[Tuple[float, float]]) -> Optional[Tuple[float, float]]:
    """A run config's ``loss.clamp_logit_scale``: null = the family's default, false = no
    clamp, ``[low, high]`` = these bounds."""
    if option is None:
        return default
    if option is False:
        return None
    if isinstance(option, (list, tuple)) and len(option) == 2 and option[0] <= option[1]:
        return float(option[0]), float(option[1])
    raise ValueError(f"loss.clamp_logit_scale must be null, false or [low, high], got {option!r}")


class ContrastiveObjective(Objective):
    """CLIP's objective: image and text features of a batch under a contrastive loss
    (``ClipLoss``, or ``SigLipLoss`` with the model's ``logit_bias``), one term named after
    the loss."""

    DEFAULT_BOUNDS = (0.0, MAX_LOGIT_SCALE)

    def __init__(self, model: nn.Cell, loss_fn: nn.Cell, term_name: str = "contrastive",
                 logit_scale_bounds: Optional[Tuple[float, float]] = DEFAULT_BOUNDS):
        super().__init__(model, (term_name,), logit_scale_bounds)
        self.loss_fn = loss_fn
        self.with_bias = isinstance(loss_fn, SigLipLoss)
        if self.with_bias and not hasattr(model, "logit_bias"):
            raise ValueError("the sigmoid loss (loss.type: siglip) learns the model's logit_bias: "
                             "use a SigLIP architecture, or set init_logit_bias in the model config")

    def features(self, images, *text):
        # ``text``: the family's text columns (CLIP: token ids; BERT-style: ids + mask)
        image_features = l2_normalize(self.model.image_features(images)).astype(ms.float32)
        text_features = l2_normalize(self.model.text_features(*text)).astype(ms.float32)
        return image_features, text_features

    def loss(self, image_features, text_features):
        scale = ops.exp(self.model.logit_scale)
        if self.with_bias:
            total = self.loss_fn(image_features, text_features, scale, self.model.logit_bias)
        else:
            total = self.loss_fn(image_features, text_features, scale)
        return total, (total,)
