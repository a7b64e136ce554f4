"""One jitted contrastive training step: forward, loss, gradients, clipping, AdamW, clamp.

Gradient accumulation follows open_clip: features of all micro-batches are computed first
without gradients, then each micro-batch is re-run with gradients against the cached
features of the others, so the accumulated gradient is that of the full-batch contrastive
loss (every sample sees every other as a negative), not a sum of small-batch losses.
"""
from __future__ import annotations

from typing import List, Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..models.clip import MAX_LOGIT_SCALE, CLIPModel, l2_normalize


def _replace_chunk(cache: Tensor, chunk: Tensor, index: int, size: int, count: int) -> Tensor:
    # index/count are compile-time constants, so no empty slice is ever built.
    if count == 1:
        return chunk
    if index == 0:
        return ops.concat((chunk, cache[size:]), axis=0)
    if index == count - 1:
        return ops.concat((cache[:index * size], chunk), axis=0)
    return ops.concat((cache[:index * size], chunk, cache[(index + 1) * size:]), axis=0)


class TrainStep(nn.Cell):
    """``construct(images, texts) -> (loss, lr, logit_scale)``; updates the weights in place.

    Args:
        model: the CLIP model (set to train mode by the caller).
        loss_fn: a loss Cell taking ``(image_features, text_features, logit_scale)``.
        optimizer: :class:`~mindspore_clip.training.optim.AdamW` over the trainable params.
        accumulate_steps: micro-batches per step (the batch is split evenly).
        clip_grad_norm: global-norm clipping threshold, or None.
        loss_scale: static loss scale for fp16 training (1.0 for fp32).
        grad_reducer: averages gradients across data-parallel ranks, or None.
    """

    def __init__(self, model: CLIPModel, loss_fn: nn.Cell, optimizer: nn.Cell,
                 accumulate_steps: int = 1, clip_grad_norm: Optional[float] = None,
                 loss_scale: float = 1.0, grad_reducer: Optional[nn.Cell] = None):
        super().__init__(auto_prefix=False)
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.accumulate_steps = accumulate_steps
        self.clip_grad_norm = clip_grad_norm
        self.loss_scale = float(loss_scale)
        self.grad_reducer = grad_reducer
        self.shapes = tuple(tuple(p.shape) for p in self.weights)
        self.value_and_grad = ops.value_and_grad(self._loss, None, self.weights)

    def _loss(self, images, texts, cached_image, cached_text, index: int):
        size = images.shape[0]
        image_features = l2_normalize(self.model.visual(images)).astype(ms.float32)
        text_features = l2_normalize(self.model.text(texts)).astype(ms.float32)
        all_image = _replace_chunk(cached_image, image_features, index, size, self.accumulate_steps)
        all_text = _replace_chunk(cached_text, text_features, index, size, self.accumulate_steps)
        loss = self.loss_fn(all_image, all_text, ops.exp(self.model.logit_scale))
        return loss * self.loss_scale

    def _cached_features(self, images, texts):
        micro = images.shape[0] // self.accumulate_steps
        image_parts, text_parts = [], []
        for j in range(self.accumulate_steps):
            image_parts.append(l2_normalize(self.model.visual(images[j * micro:(j + 1) * micro])))
            text_parts.append(l2_normalize(self.model.text(texts[j * micro:(j + 1) * micro])))
        cached_image = ops.stop_gradient(ops.concat(image_parts, axis=0).astype(ms.float32))
        cached_text = ops.stop_gradient(ops.concat(text_parts, axis=0).astype(ms.float32))
        return cached_image, cached_text

    def construct(self, images, texts):
        micro = images.shape[0] // self.accumulate_steps
        if self.accumulate_steps == 1:
            dummy = ops.zeros((1,), ms.float32)
            loss, grads = self.value_and_grad(images, texts, dummy, dummy, 0)
        else:
            cached_image, cached_text = self._cached_features(images, texts)
            loss, grads = self.value_and_grad(images[:micro], texts[:micro],
                                              cached_image, cached_text, 0)
            for j in range(1, self.accumulate_steps):
                _, chunk_grads = self.value_and_grad(images[j * micro:(j + 1) * micro],
                                                     texts[j * micro:(j + 1) * micro],
                                                     cached_image, cached_text, j)
                grads = tuple(a + b for a, b in zip(grads, chunk_grads))
        if self.loss_scale != 1.0:
            grads = tuple(g / self.loss_scale for g in grads)
            loss = loss / self.loss_scale
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        if self.clip_grad_norm is not None:
            clipped = ops.clip_by_global_norm(grads, self.clip_grad_norm)
            # clip_by_global_norm turns 0-d gradients (logit_scale) into shape (1,).
            grads = tuple(g.reshape(s) for g, s in zip(clipped, self.shapes))
        lr = self.optimizer.current_lr()
        updated = ops.depend(self.model.logit_scale, self.optimizer(grads))
        clamped = ops.clamp(updated, 0.0, MAX_LOGIT_SCALE)
        done = ops.assign(self.model.logit_scale, clamped)
        return ops.depend(loss, done), lr, ops.depend(clamped, done)


def lock_image_tower(model: CLIPModel, unlocked_groups: int = 0) -> None:
    """Freeze the image tower except its last ``unlocked_groups`` layer groups (LiT).

    Groups (open_clip's): the stem/embeddings, each residual block (ViT) or stage (ResNet),
    then the final norm + projection.
    """
    visual = model.visual
    if hasattr(visual, "transformer"):
        groups: List[list] = [[visual.conv1, visual.class_embedding, visual.positional_embedding,
                               visual.ln_pre]]
        groups += [[b] for b in visual.transformer.resblocks]
        groups.append([visual.ln_post, visual.proj])
    else:
        groups = [[visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3, visual.bn3],
                  [visual.layer1], [visual.layer2], [visual.layer3], [visual.layer4],
                  [visual.attnpool]]
    _freeze(groups, unlocked_groups)


def lock_text_tower(model: CLIPModel, unlocked_layers: int = 0) -> None:
    """Freeze the text tower except its last ``unlocked_layers`` groups
    (embeddings, each block, final norm + projection)."""
    text = model.text
    groups: List[list] = [[text.token_embedding, text.positional_embedding]]
    groups += [[b] for b in text.transformer.resblocks]
    groups.append([text.ln_final, text.text_projection])
    _freeze(groups, unlocked_layers)


def _freeze(groups: List[list], unlocked: int) -> None:
    frozen = groups[:len(groups) - unlocked] if unlocked > 0 else groups
    for group in frozen:
        for item in group:
            params = item.get_parameters() if isinstance(item, nn.Cell) else [item]
            for p in params:
                p.requires_grad = False
