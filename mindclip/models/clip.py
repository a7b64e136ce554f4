"""The CLIP model: an image tower and a text tower trained into one embedding space."""
from __future__ import annotations

import math
from typing import Any, List, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..normalization import OPENAI_MEAN, OPENAI_STD
from .config import CLIPConfig
from .compiled import PublicCallsMixin
from .inputs import check_token_ids
from .layers import TrainModeMixin
from .pretrained import PretrainedModelMixin
from .towers import build_text_tower, build_vision_tower

# CLIP clamps the learned temperature so that logits are scaled by at most 100.
MAX_LOGIT_SCALE = math.log(100.0)


def l2_normalize(x: Tensor) -> Tensor:
    """``x / max(||x||, 1e-12)`` along the last axis (PyTorch's ``F.normalize``)."""
    norm = ops.sqrt((x.astype(ms.float32) ** 2).sum(axis=-1, keepdims=True))
    return (x.astype(ms.float32) / ops.clamp(norm, min=1e-12)).astype(x.dtype)


class CLIPModel(PublicCallsMixin, PretrainedModelMixin, TrainModeMixin, nn.Cell):
    """CLIP as a MindSpore Cell.

    ``model(image, text)`` returns L2-normalised image and text features and
    ``exp(logit_scale)``; ``encode_image``/``encode_text`` run one tower. These public calls
    check their inputs and run compiled in both modes (:mod:`.compiled`).
    """

    family = "clip"
    # The statistics images are normalised with before they reach the image tower.
    image_mean = OPENAI_MEAN
    image_std = OPENAI_STD

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.visual = build_vision_tower(config.vision_cfg, config.embed_dim, config.quick_gelu)
        self.text = build_text_tower(config.text_cfg, config.embed_dim, config.quick_gelu)
        self.logit_scale = Parameter(Tensor(math.log(1 / 0.07), ms.float32), name="logit_scale")
        if config.init_logit_bias is not None:  # SigLIP's learnable bias, loaded with the weights
            self.logit_bias = Parameter(Tensor(config.init_logit_bias, ms.float32), name="logit_bias")

    @property
    def image_size(self) -> int:
        return self.config.vision_cfg.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def context_length(self) -> int:
        return self.config.text_cfg.context_length

    def image_features(self, image: Tensor, normalize: bool = False) -> Tensor:
        """Graph-level ``encode_image`` (what the train step and objectives trace)."""
        features = self.visual(image)
        return l2_normalize(features) if normalize else features

    def text_features(self, text: Tensor, normalize: bool = False) -> Tensor:
        """Graph-level ``encode_text``: features ``(B, embed_dim)`` from token ids ``(B, L)``."""
        features = self.text(text)
        return l2_normalize(features) if normalize else features

    def check_text(self, text: Any, *rest: Any) -> None:
        if rest:
            raise TypeError(f"a {type(self).__name__} takes one text input (token ids), got {1 + len(rest)}")
        check_token_ids(text, self.text.vocab_size, self.context_length)

    def construct(self, image, text) -> Tuple[Tensor, Tensor, Tensor]:
        image_features = l2_normalize(self.visual(image))
        text_features = l2_normalize(self.text(text))
        return image_features, text_features, ops.exp(self.logit_scale)

    def set_patch_dropout(self, prob: float) -> None:
        """Drop this fraction of each training image's patch tokens (FLIP; open_clip's
        ``--force-patch-dropout``); inference keeps every token. Set before the first
        compiled call: the fraction is a constant of the graph."""
        setter = getattr(self.visual, "set_patch_dropout", None)
        if setter is None:
            raise ValueError(f"patch dropout needs a ViT image tower, not a {type(self.visual).__name__}")
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"patch dropout {prob} is not in [0, 1)")
        setter(float(prob))

    def lock_image_tower(self, unlocked_groups: int = 0) -> None:
        """Freeze the image tower except its last ``unlocked_groups`` layer groups (LiT).

        Groups are the tower's (``lock_groups``, open_clip's): the stem/embeddings, each
        residual block (ViT) or stage (ResNet), then the final norm + projection.
        """
        visual = self.visual
        freeze_groups(visual.lock_groups(), unlocked_groups)
        # A locked tower with BatchNorm (ResNet) stays in eval mode to keep its statistics; a
        # locked ViT keeps training mode, as open_clip's does, so that patch dropout applies.
        self._image_locked = bool(getattr(visual, "keeps_eval_when_locked", False))

    def lock_text_tower(self, unlocked_layers: int = 0) -> None:
        """Freeze the text tower except its last ``unlocked_layers`` groups
        (embeddings, each block, final norm + projection)."""
        text = self.text
        if hasattr(text, "lock"):  # a Hugging Face tower locks as open_clip locks it
            text.lock(unlocked_layers)
            return
        groups: List[list] = [[text.token_embedding, text.positional_embedding]
                              + ([text.cls_emb] if text.embed_cls else [])]
        groups += [[b] for b in text.transformer.resblocks]
        groups.append([text.ln_final] + ([text.text_projection]
                                         if text.text_projection is not None else []))
        freeze_groups(groups, unlocked_layers)


def freeze_groups(groups: List[list], unlocked: int) -> None:
    """Set ``requires_grad=False`` on every Cell/Parameter of all but the last ``unlocked``
    groups."""
    frozen = groups[:len(groups) - unlocked] if unlocked > 0 else groups
    for group in frozen:
        for item in group:
            params = item.get_parameters() if isinstance(item, nn.Cell) else [item]
            for p in params:
                p.requires_grad = False
