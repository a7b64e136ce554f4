"""What a model family provides (DESIGN §1a), as one record the registry holds.

Front doors, the runner, evaluation and conversion ask a family for these pieces instead of
branching on its name; adding a family is a new module that registers one :class:`Family`
(``register("family", name)(Family(...))``) plus architecture configs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .scoring import softmax_scores


@dataclass(frozen=True)
class Family:
    """A model family.

    Attributes:
        name: registry name, recorded in converted files and training checkpoints.
        config_class: architecture dataclass with ``from_dict``/``to_dict``.
        model_class: ``nn.Cell`` built as ``model_class(config)``, with ``encode_image(images,
            normalize=False)``, ``encode_text(*text_inputs, normalize=False)``, a
            ``logit_scale`` Parameter (log space) and ``image_size``/``embed_dim``.
        get_tokenizer: ``(config, folder) -> text processor``, ``folder`` being where the
            model's weights were loaded from (tokenizer files saved with them) or None; the
            processor maps a string or a list of strings to what ``encode_text`` takes: one
            int32 array ``(B, L)`` or a dict of such arrays, passed to ``encode_text`` in the
            dict's order. A processor with ``save(folder)`` is saved next to the weights.
        build_objective: ``(model, run_cfg, rank, world) -> Objective`` (see
            :class:`mindclip.losses.Objective`): the training loss returning the total and its
            named terms; its non-trainable Parameters (e.g. a memory bank) are the family's
            checkpoint state beyond the model's weights.
        build_batch: ``(model, run_cfg) -> SampleBuilder`` (see
            :class:`mindclip.data.batch.SampleBuilder`): the per-sample text columns the
            training loader produces for this family's objective.
        converters: objects that read PyTorch layouts of this family (``detect``/``convert``)
            and rename checkpoints a model of this family loads directly (``adapt``).
        label_scores: ``(model, image_features, label_features) -> (images, labels)`` scores
            of unit features (:mod:`mindclip.evaluation.scoring`: CLIP's softmax, SigLIP's
            sigmoids), what zero-shot pipelines and ``predict`` return.
        claims: ``(architecture dict) -> bool``: whether an architecture file that names no
            family (open_clip's own JSON) is this family's (SigLIP: a timm SigLIP ViT);
            files claimed by no family are CLIP's.
        generates: the model writes text (``model.generate(images, ...)``: CoCa), which the
            ``image_to_text`` pipeline, ``--run_mode predict`` and caption metrics use.
    """

    name: str
    config_class: type
    model_class: type
    get_tokenizer: Callable[..., Callable]
    build_objective: Callable[..., Any]
    build_batch: Callable[..., Any]
    converters: Sequence[Any] = field(default_factory=tuple)
    label_scores: Callable[..., Any] = softmax_scores
    claims: Optional[Callable[[Dict[str, Any]], bool]] = None
    generates: bool = False

    def config_from_dict(self, data: Dict[str, Any]) -> Any:
        return data if isinstance(data, self.config_class) else self.config_class.from_dict(data)

    def build_model(self, config: Any, initialize: bool = True) -> Any:
        """A model of architecture ``config``. ``initialize=False`` for one whose weights are
        loaded next: its parameters get shapes but no drawn values (MindSpore's
        ``no_init_parameters``; any left unloaded are drawn when the model first runs or on
        ``init_parameters_data()``). MindSpore draws initial values at ~35 M numbers/s on
        one core: a ViT-B-32 took 9.1 s to build with them, 0.25 s without, and a checkpoint
        replaces every one."""
        from mindspore.nn.utils import no_init_parameters

        with contextlib.nullcontext() if initialize else no_init_parameters():
            model = self.model_class(self.config_from_dict(config))
        # Several families may share a model class; the instance records which one it is.
        model.family = self.name
        return model


def get_family(name: str) -> Family:
    """The registered family ``name`` (an error lists the valid ones)."""
    from ..registry import get

    return get("family", name)


def family_of_architecture(data: Dict[str, Any], default: str) -> Family:
    """The family of an architecture dict: its ``family`` key, else the registered family
    that claims it, else ``default``."""
    from ..registry import names

    if data.get("family"):
        return get_family(data["family"])
    for name in names("family"):
        family = get_family(name)
        if family.claims is not None and family.claims(data):
            return family
    return get_family(default)


def family_for_config(config: Any) -> Family:
    """The registered family whose config class is exactly ``type(config)``."""
    from ..registry import names

    for name in names("family"):
        family = get_family(name)
        if type(config) is family.config_class:
            return family
    raise TypeError(f"no registered family uses {type(config).__name__}")


def family_of(model: Any) -> Family:
    """The family a model instance belongs to."""
    name = getattr(model, "family", None)
    if not name:
        raise TypeError(f"{type(model).__name__} is not a mindclip model (no family)")
    return get_family(name)


def split_text_inputs(tokens: Any) -> Tuple[Any, ...]:
    """A text processor's output as the positional inputs of ``encode_text``."""
    if isinstance(tokens, dict):
        return tuple(tokens.values())
    if isinstance(tokens, (tuple, list)):
        return tuple(tokens)
    return (tokens,)
