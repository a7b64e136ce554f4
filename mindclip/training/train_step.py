"""One jitted training step for any model family: the family's objective, its gradients,
accumulation, loss scaling (a non-finite step is skipped), clipping, AdamW and the
objective's logit-scale rule.

The step knows nothing about towers: it differentiates ``objective`` (see
:class:`mindclip.losses.Objective`). Gradient accumulation follows open_clip: features of all
micro-batches are computed first without gradients, then each micro-batch is re-run with
gradients against the cached features of the others, so the accumulated gradient is that of
the full-batch loss (every sample sees every other as a negative), not a sum of small-batch
losses; the parameters only the loss reads (``logit_scale``) take their gradient from one
micro-batch, as the full batch would give it. With accumulation the step is a loop of three
compiled graphs (micro-batch features, one micro-batch's gradients, the update), so only one
micro-batch's activations are alive at a time.
"""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..models.checkpointing import graph_mode_limits
from .precision import LossScale, all_finite


def _replace_rows(cache: Tensor, chunk: Tensor, index: Tensor) -> Tensor:
    """``cache`` with rows ``index * len(chunk) ...`` replaced by ``chunk`` (``index`` a 0-d
    int32 tensor, so one compiled graph serves every micro-batch)."""
    size = chunk.shape[0]
    rows = (index * size + ops.arange(size, dtype=ms.int32)).reshape(-1, 1)
    return ops.tensor_scatter_update(cache, rows, chunk)


def _loss_factor(loss_scale: Optional[LossScale]) -> Tensor:
    """What the loss is multiplied by before differentiation: the fp16 loss scale, or 1."""
    return loss_scale.value * 1.0 if loss_scale is not None else ops.ones((), ms.float32)


class _Features(nn.Cell):
    """A micro-batch's features without gradients (the accumulation's cache)."""

    def __init__(self, objective: nn.Cell):
        super().__init__(auto_prefix=False)
        self.objective = objective

    def construct(self, *micro):
        return tuple(ops.stop_gradient(f) for f in self.objective.features(*micro))


class _ChunkGradients(nn.Cell):
    """``((loss, terms), grads)`` of one micro-batch scored against the cached features of all,
    its own features put in place of its cached rows."""

    def __init__(self, objective: nn.Cell, weights, loss_scale: Optional[LossScale]):
        super().__init__(auto_prefix=False)
        self.objective = objective
        self.loss_scale = loss_scale
        self.value_and_grad = ops.value_and_grad(self._loss, None, weights, has_aux=True)

    def _loss(self, scale, index, cache, *micro):
        merged = tuple(_replace_rows(c, f, index) for c, f in zip(cache, self.objective.features(*micro)))
        total, terms = self.objective.loss(*merged)
        return total * scale, terms

    def construct(self, index, cache, *micro):
        return self.value_and_grad(_loss_factor(self.loss_scale), index, cache, *micro)


class TrainStep(nn.Cell):
    """``construct(*batch) -> (loss, terms, lr, logit_scale)``; updates the weights in place.

    Args:
        objective: the family's :class:`~mindclip.losses.Objective` (holds the model, which
            the caller sets to train mode).
        optimizer: :class:`~mindclip.training.optim.AdamW` over the trainable params.
        accumulate_steps: micro-batches per step (the batch is split evenly).
        clip_grad_norm: global-norm clipping threshold, or None.
        loss_scale: the :class:`~mindclip.training.precision.LossScale` of an fp16 run, or
            None. With one, a step whose unscaled gradients are not all finite changes no
            weight, optimizer moment, step counter or logit scale; the loss scale adapts.
        grad_reducer: averages gradients across data-parallel ranks, or None.
    """

    def __init__(self, objective: nn.Cell, optimizer: nn.Cell, accumulate_steps: int = 1,
                 clip_grad_norm: Optional[float] = None, loss_scale: Optional[LossScale] = None,
                 grad_reducer: Optional[nn.Cell] = None):
        super().__init__(auto_prefix=False)
        if accumulate_steps > 1 and not objective.supports_accumulation:
            reason = getattr(objective, "accumulation_refusal", "")
            raise ValueError(f"{type(objective).__name__} does not support gradient accumulation"
                             + (f" ({reason})" if reason else "") + "; set runner.accumulate_steps to 1")
        limits = graph_mode_limits(objective.model)
        if limits:  # the step always runs in GRAPH mode (see __call__)
            raise ValueError("grad checkpointing cannot run in the train step (GRAPH mode): "
                             + "; ".join(limits) + "; leave runner.grad_checkpointing off for this model")
        self.objective = objective
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.accumulate_steps = accumulate_steps
        self.clip_grad_norm = clip_grad_norm
        self.loss_scale = loss_scale
        self.grad_reducer = grad_reducer
        self.shapes = tuple(tuple(p.shape) for p in self.weights)
        once = set(objective.loss_parameter_names())
        self.once = tuple(p.name in once for p in self.weights)
        self.logit_scale = getattr(objective.model, "logit_scale", None)
        bounds = objective.logit_scale_bounds if self.logit_scale is not None else None
        self.clamp = bounds is not None
        self.clamp_before = self.clamp and objective.clamp_before_step
        self.low, self.high = bounds if bounds is not None else (0.0, 0.0)
        self.value_and_grad = ops.value_and_grad(self._whole_loss, None, self.weights, has_aux=True)
        # Accumulation runs as separate graphs from Python (see __call__), held outside the
        # Cell tree: their parameters are this step's own.
        self._accumulation = ([_Features(objective), _ChunkGradients(objective, self.weights, loss_scale)]
                              if accumulate_steps > 1 else [])

    def release(self) -> None:
        """Free this step's compiled graphs and drop the optimizer (its moments are two model-sized
        buffers, 1.2 GB for ViT-B-32). MindSpore 2.10 keeps a Cell whose graph called a
        gradient function alive for the rest of the process (a reference held in its C++
        runtime, released neither by collection nor by ``ms.ms_memory_recycle``), so the step's
        own references are what can be let go; other compiled graphs stay compiled. The step
        cannot run afterwards."""
        from mindspore.graph.api import _cell_graph_executor

        for cell in [self, *self._accumulation]:
            if cell.compile_cache:
                _cell_graph_executor.del_net_res(cell, cell.compile_cache)
                cell.compile_cache.clear()
        self._accumulation = []
        self.value_and_grad = None
        if "optimizer" in self._cells:
            del self.optimizer
        self.weights = None

    def _whole_loss(self, scale, *batch):
        total, terms = self.objective(*batch)
        return total * scale, terms

    def __call__(self, *batch):
        # One graph in PyNative mode too (MindSpore's default, where a Trainer built in Python
        # runs): op by op a ViT-B/32 step ran at half the speed, and as an ``ms.jit`` graph
        # MindSpore's PyNative runtime kept a core busy beside the kernels (10.2 s per step
        # against 7.1 s in GRAPH mode), so the step switches to GRAPH mode for its duration.
        if ms.get_context("mode") == ms.GRAPH_MODE:
            return self._step(batch)
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            return self._step(batch)
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)

    def _step(self, batch):
        if self.accumulate_steps == 1:
            return super().__call__(*batch)
        # Accumulation as a loop of graphs: the cache's forward passes, then one compiled
        # micro-batch gradient graph run per micro-batch, then the update. Unrolled into one
        # graph, ViT-B-32 at batch 32 in 4 micro-batches held 13.3 GB (5.96 GB without
        # accumulation) and took 4 minutes to compile.
        features, chunk_gradients = self._accumulation
        size = batch[0].shape[0] // self.accumulate_steps
        micro = [tuple(x[j * size:(j + 1) * size] for x in batch) for j in range(self.accumulate_steps)]
        parts = [features(*m) for m in micro]
        # a tuple argument is a compile-time constant to MindSpore unless marked mutable
        cache = ms.mutable(tuple(ops.concat([p[k] for p in parts], axis=0) for k in range(len(parts[0]))))
        (loss, terms), grads = chunk_gradients(Tensor(0, ms.int32), cache, *micro[0])
        grads = list(grads)
        for j in range(1, self.accumulate_steps):
            _, more = chunk_gradients(Tensor(j, ms.int32), cache, *micro[j])
            more = list(more)
            for i, once in enumerate(self.once):  # one tensor at a time: two gradient sets alive, not three
                if not once:
                    grads[i] = grads[i] + more[i]
                more[i] = None
            del more
        return super().__call__(loss, ms.mutable(terms), cache, *grads)

    def construct(self, *inputs):
        """``*batch`` (one graph: loss, gradients and update), or with accumulation
        ``loss, terms, cache, *grads`` (the update of the accumulated gradients; the
        objective's per-batch state moves once, from the cached features of the whole batch)."""
        scaled = self.loss_scale is not None
        factor = _loss_factor(self.loss_scale)
        if self.accumulate_steps == 1:
            (loss, terms), grads = self.value_and_grad(factor, *inputs)
        else:
            loss, terms, cache, grads = inputs[0], inputs[1], inputs[2], inputs[3:]
            if self.objective.updates_state:
                # before the optimizer: the state moves with the weights the features came from
                grads = ops.depend(grads, self.objective.state_update(*cache))
        if scaled:
            grads = tuple(g.astype(ms.float32) / factor for g in grads)
            loss = loss / factor
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        # Every rank sees the same reduced gradients, so all of them skip the same steps.
        finite = all_finite(grads) if scaled else None
        if self.clip_grad_norm is not None:
            clipped = ops.clip_by_global_norm(grads, self.clip_grad_norm)
            # clip_by_global_norm turns 0-d gradients (logit_scale) into shape (1,).
            grads = tuple(g.reshape(s) for g, s in zip(clipped, self.shapes))
        lr = self.optimizer.current_lr()
        if self.clamp_before:
            # DeCLIP's rule: the forward used the raw value (unclamped on a fresh model's first
            # step); the update applies to the clamped one. Reads after the write see it
            # (auto-monad), so the optimizer gets the clamped value; the write waits for the
            # gradients, since MindSpore's CPU runtime may otherwise run it before the
            # forward's readers of the value it replaces are done (a read is not a copy).
            clamped = ops.depend(ops.clamp(self.logit_scale, self.low, self.high), grads)
            grads = ops.depend(grads, ops.assign(self.logit_scale, clamped))
        done = self.optimizer(grads, finite)
        if scaled:
            done = ops.depend(done, self.loss_scale(finite))
        if self.logit_scale is None:
            return ops.depend(loss, done), terms, lr, ops.zeros((), ms.float32)
        scale = ops.depend(self.logit_scale, done) * 1.0  # read after the update
        if self.clamp:
            # An in-range value is its own clamp: a skipped step leaves logit_scale as it was.
            scale = ops.clamp(scale, self.low, self.high)
            done = ops.assign(self.logit_scale, scale)
        return ops.depend(loss, done), terms, lr, ops.depend(scale, done)
