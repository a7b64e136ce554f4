"""Evaluation tasks run by ``--run_mode eval`` / ``Trainer.evaluate()``, by registered name."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..data.base import ImageTextSource, LabeledImageSource
from ..data.loader import build_source, eval_image_loader
from ..factory import get_tokenizer
from ..registry import register
from .prompts import load_class_names, load_templates, preset_for
from .retrieval import retrieval_evaluate
from .zero_shot import build_classifier, zero_shot_evaluate


def class_names_and_templates(dataset_cfg: Dict, source: Optional[LabeledImageSource] = None):
    """The class list and templates an eval config implies: explicit values first, then the
    dataset type's preset (CIFAR's 18 templates...), then the dataset's own class names."""
    preset = preset_for(dataset_cfg.get("type"))
    default_names = source.class_names if source is not None else None
    if dataset_cfg.get("class_names") is None and preset is not None:
        names = load_class_names(preset)
    else:
        names = load_class_names(dataset_cfg.get("class_names"), default_names)
    templates = load_templates(dataset_cfg.get("templates") or preset)
    return names, templates


@register("task", "zero_shot_image_classification")
def evaluate_zero_shot(model: Any, dataset_cfg: Dict, batch_size: int = 64,
                       top_k: List[int] = (1, 5), cache: bool = True, source=None) -> Dict:
    source = source or build_source(dataset_cfg)
    if not isinstance(source, LabeledImageSource):
        raise ValueError(f"zero-shot classification needs a labelled dataset, got {source.name}")
    names, templates = class_names_and_templates(dataset_cfg, source)
    if len(names) != len(source.class_names):
        raise ValueError(f"{len(names)} class names for a dataset with {len(source.class_names)} classes")
    model.set_train(False)
    tokenizer = get_tokenizer(model)
    # Text batches follow eval.batch_size: one compiled graph per batch shape, each holding
    # its own buffers on CPU, so the classifier reuses the image batch's.
    classifier = build_classifier(model, tokenizer, names, templates, batch_size, cache=cache)
    loader = eval_image_loader(source, model.image_size, batch_size,
                               num_workers=int(dataset_cfg.get("num_workers") or 2),
                               preprocess=model.preprocess,
                               resize_size=dataset_cfg.get("resize_size"))
    metrics = zero_shot_evaluate(model, loader, classifier, names, batch_size, top_k)
    metrics.update(task="zero_shot_image_classification", dataset=source.name,
                   num_classes=len(names), num_templates=len(templates))
    return metrics


@register("task", "image_text_retrieval")
def evaluate_retrieval(model: Any, dataset_cfg: Dict, batch_size: int = 64,
                       top_k: List[int] = (1, 5), cache: bool = True, source=None) -> Dict:
    del top_k, cache
    source = source or build_source(dataset_cfg)
    if not isinstance(source, ImageTextSource):
        raise ValueError(f"retrieval needs an image-caption dataset, got {source.name}")
    model.set_train(False)
    tokenizer = get_tokenizer(model)
    loader = eval_image_loader(source, model.image_size, batch_size,
                               num_workers=int(dataset_cfg.get("num_workers") or 2),
                               preprocess=model.preprocess,
                               resize_size=dataset_cfg.get("resize_size"))
    metrics = retrieval_evaluate(model, tokenizer, source, loader, batch_size, batch_size)
    metrics.update(task="image_text_retrieval", dataset=source.name)
    return metrics


@register("task", "image_captioning")
def evaluate_captioning(model: Any, dataset_cfg: Dict, batch_size: int = 64,
                        top_k: List[int] = (1, 5), cache: bool = True, source=None,
                        generation: Optional[Dict] = None) -> Dict:
    """BLEU-1..4, CIDEr-D, ROUGE-L of the model's captions (``generation``: ``generate``'s
    keywords) against a caption dataset's references; a few examples are kept."""
    from .captioning import caption_scores, generate_captions

    del top_k, cache
    source = source or build_source(dataset_cfg)
    if not isinstance(source, ImageTextSource):
        raise ValueError(f"captioning needs an image-caption dataset, got {source.name}")
    model.set_train(False)
    loader = eval_image_loader(source, model.image_size, batch_size,
                               num_workers=int(dataset_cfg.get("num_workers") or 2),
                               preprocess=model.preprocess,
                               resize_size=dataset_cfg.get("resize_size"))
    indices, captions = generate_captions(model, get_tokenizer(model), loader, dict(generation or {}))
    metrics = caption_scores([source.captions[i] for i in indices], captions)
    metrics.update(task="image_captioning", dataset=source.name, num_images=len(indices),
                   examples=[{"image": str(source.images[i]) if isinstance(source.images[i], str) else i,
                              "generated_text": c, "references": source.captions[i][:2]}
                             for i, c in list(zip(indices, captions))[:5]])
    return metrics


def evaluate_any(model: Any, dataset_cfg: Dict, batch_size: int = 64, top_k=(1, 5),
                 cache: bool = True, generation: Optional[Dict] = None) -> Dict:
    """Zero-shot for labelled datasets, retrieval for caption datasets, and captioning
    metrics too when the model writes text."""
    source = build_source(dataset_cfg)
    if isinstance(source, LabeledImageSource):
        return evaluate_zero_shot(model, dataset_cfg, batch_size, top_k, cache, source=source)
    metrics = evaluate_retrieval(model, dataset_cfg, batch_size, top_k, cache, source=source)
    if writes_text(model):
        metrics["captioning"] = evaluate_captioning(model, dataset_cfg, batch_size, source=source,
                                                    generation=generation)
    return metrics


def writes_text(model: Any) -> bool:
    from ..families.base import family_of

    return family_of(model).generates
