"""Vision-text dual encoder: a CLIP ViT image tower and a BERT/RoBERTa text tower joined by
two bias-free projections — Hugging Face's ``VisionTextDualEncoderModel``.

The image tower is our ViT with ``CLIPVisionModel``'s semantics (pre-LayerNorm, post-LayerNorm
on the class token); HF's ``visual_projection`` is the tower's ``proj`` matrix (transposed), so
``encode_image`` equals ``get_image_features``. ``encode_text(input_ids, attention_mask)``
equals ``get_text_features``: the text model's pooler output through ``text_projection``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from ..normalization import OPENAI_MEAN, OPENAI_STD
from .bert import BertConfig, BertModel
from .clip import freeze_groups, l2_normalize
from .config import CLIPVisionCfg
from .compiled import PublicCallsMixin
from .inputs import check_same_shape, check_token_ids
from .layers import Dense, TrainModeMixin
from .pretrained import PretrainedConfigMixin, PretrainedModelMixin
from .vision import VisionTransformer


@dataclass
class DualEncoderConfig(PretrainedConfigMixin):
    """Both towers, the shared projection size and the temperature's initial value."""

    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    vision_cfg: CLIPVisionCfg = field(default_factory=lambda: CLIPVisionCfg(patch_size=32))
    vision_quick_gelu: bool = True
    text_cfg: BertConfig = field(default_factory=BertConfig)
    max_seq_length: int = 128  # run_clip.py's default: what the tokenizer pads/truncates to

    def __post_init__(self):
        if self.max_seq_length > self.text_cfg.max_position_embeddings - (
                self.text_cfg.pad_token_id + 1 if self.text_cfg.is_roberta else 0):
            raise ValueError(f"max_seq_length {self.max_seq_length} exceeds the text model's "
                             f"{self.text_cfg.max_position_embeddings} positions")

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DualEncoderConfig":
        data = dict(data)
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in dual encoder config; valid keys are: "
                             f"{sorted(valid)}")
        vision, text = data.pop("vision_cfg", {}), data.pop("text_cfg", {})
        vision = vision if isinstance(vision, CLIPVisionCfg) else CLIPVisionCfg(**vision)
        text = text if isinstance(text, BertConfig) else BertConfig.from_dict(text)
        if vision.is_resnet:
            raise ValueError("the dual encoder's image tower is a ViT (Hugging Face CLIPVisionModel)")
        return cls(vision_cfg=vision, text_cfg=text, **data)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class DualEncoderModel(PublicCallsMixin, PretrainedModelMixin, TrainModeMixin, nn.Cell):
    """``construct(images, input_ids, attention_mask)`` -> normalised image and text
    features and ``exp(logit_scale)``, as :class:`~mindclip.models.clip.CLIPModel`."""

    family = "dual_encoder"
    image_mean = OPENAI_MEAN  # run_clip.py's CLIP image processor
    image_std = OPENAI_STD

    def __init__(self, config: DualEncoderConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.vision_cfg, config.projection_dim,
                                        config.vision_quick_gelu)
        self.text = BertModel(config.text_cfg)
        self.text_projection = Dense(config.text_cfg.hidden_size, config.projection_dim,
                                        weight_init=Normal(config.text_cfg.initializer_range),
                                        has_bias=False)
        self.logit_scale = Parameter(Tensor(config.logit_scale_init_value, ms.float32),
                                     name="logit_scale")
        # HF initialises both projections N(0, initializer_range); CLIP's ViT uses width**-0.5.
        self.visual.proj.set_data(initializer(Normal(config.text_cfg.initializer_range),
                                              self.visual.proj.shape, ms.float32))

    @property
    def image_size(self) -> int:
        return self.config.vision_cfg.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.projection_dim

    @property
    def context_length(self) -> int:
        return self.config.max_seq_length

    def image_features(self, image: Tensor, normalize: bool = False) -> Tensor:
        """Graph-level ``encode_image``."""
        features = self.visual(image)
        return l2_normalize(features) if normalize else features

    def text_features(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = False) -> Tensor:
        """Graph-level ``encode_text``: ``get_text_features`` of ids and their mask."""
        features = self.text_projection(self.text(input_ids, attention_mask))
        return l2_normalize(features) if normalize else features

    def check_text(self, input_ids: Any, attention_mask: Any = None) -> None:
        if attention_mask is None:
            raise TypeError("a dual encoder takes input_ids and attention_mask (what its tokenizer returns)")
        check_token_ids(input_ids, self.config.text_cfg.vocab_size, self.context_length, "input_ids")
        check_same_shape(input_ids, attention_mask, "input_ids", "attention_mask")

    def construct(self, images, input_ids, attention_mask):
        return (l2_normalize(self.image_features(images)),
                l2_normalize(self.text_features(input_ids, attention_mask)), ops.exp(self.logit_scale))

    def lock_image_tower(self, unlocked_groups: int = 0) -> None:
        """run_clip.py's ``freeze_vision_model``: every vision-model parameter is frozen
        except the last ``unlocked_groups`` blocks; ``visual_projection`` stays trainable."""
        groups = self.visual.lock_groups()
        groups[-1] = [self.visual.ln_post]  # the projection is visual_projection, kept trainable
        freeze_groups(groups, unlocked_groups)
        self._image_locked = True

    def lock_text_tower(self, unlocked_layers: int = 0) -> None:
        """run_clip.py's ``freeze_text_model``: the BERT/RoBERTa encoder frozen (but its last
        ``unlocked_layers`` groups); ``text_projection`` stays trainable."""
        text = self.text
        groups: List[list] = [[text.embeddings]] + [[b] for b in text.encoder.layer] + [[text.pooler]]
        freeze_groups(groups, unlocked_layers)
