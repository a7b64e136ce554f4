"""DeCLIP (Li et al., 2022): CLIP towers plus the heads of its self-supervision terms.

The towers are CLIP's (QuickGELU, a text projection with bias, vocabulary 49409 with a
``<|mask|>`` token); a DeCLIP model is therefore a :class:`CLIPModel` for every inference
front door. Training adds a SimSiam projector/predictor on the image features and a
masked-language-model head on the per-token text features. Parameter names follow DeCLIP's
checkpoints (``projector.linear1``, ``predictor.layer2``, ``text_label_predictor``) so the
converter only renames norms. The nearest-neighbour memory is training state, held by the
objective (:mod:`mindclip.families.declip`), not by the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from mindspore import Tensor, nn

from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from .clip import CLIPModel
from .config import CLIPConfig
from .layers import Dense


@dataclass
class DeCLIPConfig(CLIPConfig):
    """A DeCLIP architecture: CLIP's fields plus

    Attributes:
        freeze_patch_embedding: the ViT's ``conv1`` is not trained (DeCLIP freezes it).
        simsiam_dim: width of the SimSiam projector and of z/p (DeCLIP: 1024, hard-coded).
        simsiam_hidden: the predictor's bottleneck width (DeCLIP: 512).
        image_mean, image_std: the normalisation DeCLIP trains with (ImageNet's).
    """

    quick_gelu: bool = True
    freeze_patch_embedding: bool = True
    simsiam_dim: int = 1024
    simsiam_hidden: int = 512
    image_mean: Tuple[float, float, float] = IMAGENET_MEAN
    image_std: Tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)


class ProjectionMLP(nn.Cell):
    """SimSiam's projector: three Linear layers, each followed by BatchNorm, ReLU between."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear1 = Dense(in_dim, dim)
        self.bn1 = nn.BatchNorm1d(dim, eps=1e-5, momentum=0.9)  # PyTorch's momentum 0.1
        self.linear2 = Dense(dim, dim)
        self.bn2 = nn.BatchNorm1d(dim, eps=1e-5, momentum=0.9)
        self.linear3 = Dense(dim, dim)
        self.bn3 = nn.BatchNorm1d(dim, eps=1e-5, momentum=0.9)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.bn1(self.linear1(x)))
        x = self.relu(self.bn2(self.linear2(x)))
        return self.bn3(self.linear3(x))


class PredictionMLP(nn.Cell):
    """SimSiam's predictor: a bottleneck Linear + BatchNorm + ReLU, then a plain Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = Dense(dim, hidden)
        self.bn1 = nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.9)
        self.relu = nn.ReLU()
        self.layer2 = Dense(hidden, dim)

    def construct(self, x):
        return self.layer2(self.relu(self.bn1(self.linear1(x))))


class DeCLIPModel(CLIPModel):
    """DeCLIP as a MindSpore Cell: CLIP's ``encode_image``/``encode_text``/``construct`` plus
    ``simsiam(image_features) -> (z, p)``, ``encode_text_tokens(text) -> (features, per-token
    features)`` and ``mlm_logits(token_features)``."""

    family = "declip"

    def __init__(self, config: DeCLIPConfig):
        super().__init__(config)
        self.projector = ProjectionMLP(config.embed_dim, config.simsiam_dim)
        self.predictor = PredictionMLP(config.simsiam_dim, config.simsiam_hidden)
        self.text_label_predictor = Dense(config.text_cfg.width, config.text_cfg.vocab_size)
        if config.freeze_patch_embedding and not config.vision_cfg.is_resnet:
            self.visual.conv1.weight.requires_grad = False

    @property
    def image_mean(self) -> Tuple[float, float, float]:
        return self.config.image_mean

    @property
    def image_std(self) -> Tuple[float, float, float]:
        return self.config.image_std

    def simsiam(self, image_features: Tensor) -> Tuple[Tensor, Tensor]:
        """SimSiam's ``z = projector(f)`` and ``p = predictor(z)`` of raw image features."""
        z = self.projector(image_features)
        return z, self.predictor(z)

    def encode_text_tokens(self, text: Tensor) -> Tuple[Tensor, Tensor]:
        """Text features ``(B, embed_dim)`` and the per-token final-norm outputs
        ``(B, L, width)`` the MLM head reads, from one pass of the text tower."""
        tokens = self.text.token_features(text)
        return self.text.pool(tokens, text), tokens

    def mlm_logits(self, token_features: Tensor) -> Tensor:
        """Vocabulary logits of per-token features ``(..., width) -> (..., vocab)``."""
        return self.text_label_predictor(token_features)
