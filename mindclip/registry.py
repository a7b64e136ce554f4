"""The one registry: everything a run config names (model families, datasets, losses,
optimizers, schedules, evaluation tasks, pipelines) is registered here under a category and
looked up by name.

Registration happens where a thing is declared (``@register("dataset", "coco")`` on the
reader). The registry finds built-in entries through an explicit table of *module paths*
(:data:`BUILTIN_MODULES`), imported only when a category is first looked up. Why a table of
paths rather than entry points or importing every package: it keeps ``import mindclip`` and
this module free of imports (no import cycle through the registry; the layer check reads
none), it needs no installed package metadata (a source checkout works), and looking up a
dataset does not import the model families. Code outside mindclip registers by calling
:func:`register` (a test file, a notebook), or names its module in a run config's
``custom_imports`` so that ``run_mindformer.py`` imports it first.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterable, List

_REGISTRY: Dict[str, Dict[str, Any]] = {}

# category -> modules whose import registers the built-in entries of that category
BUILTIN_MODULES: Dict[str, tuple] = {
    "family": ("mindclip.families.clip", "mindclip.families.dual_encoder", "mindclip.families.declip",
               "mindclip.families.siglip", "mindclip.families.coca"),
    "dataset": ("mindclip.data.benchmark_wds", "mindclip.data.captions", "mindclip.data.classification",
                "mindclip.data.webdataset"),
    "loss": ("mindclip.losses",),
    "optimizer": ("mindclip.training.optim",),
    "lr_schedule": ("mindclip.training.lr",),
    "task": ("mindclip.evaluation.tasks",),
    "pipeline": ("mindclip.pipelines.feature_extraction", "mindclip.pipelines.image_text_retrieval",
                 "mindclip.pipelines.zero_shot_image_classification", "mindclip.pipelines.image_to_text"),
}
CATEGORIES = tuple(BUILTIN_MODULES)
_LOADED: set = set()


def register(category: str, name: str) -> Callable[[Any], Any]:
    """Decorator registering a class, factory function or family spec as ``category/name``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown registry category {category!r}; valid: {list(CATEGORIES)}")

    def wrap(obj: Any) -> Any:
        table = _REGISTRY.setdefault(category, {})
        if name in table and table[name] is not obj:
            raise ValueError(f"{category} {name!r} is registered twice")
        table[name] = obj
        return obj

    return wrap


def _load(category: str) -> None:
    if category not in CATEGORIES:
        raise ValueError(f"unknown registry category {category!r}; valid: {list(CATEGORIES)}")
    if category in _LOADED:
        return
    for module in BUILTIN_MODULES[category]:
        importlib.import_module(module)
    _LOADED.add(category)


def import_modules(modules: Iterable[str]) -> None:
    """Import user modules that register entries (a run config's ``custom_imports``)."""
    for module in modules or ():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"custom_imports: cannot import {module!r}: {exc}") from None


def get(category: str, name: str) -> Any:
    """The registered object, or an error listing the valid names of the category."""
    _load(category)
    table = _REGISTRY.get(category, {})
    if name not in table:
        raise KeyError(f"unknown {category} {name!r}; valid: {sorted(table)}")
    return table[name]


def build(category: str, name: str, **kwargs: Any) -> Any:
    """Instantiate ``category/name`` with ``kwargs``."""
    return get(category, name)(**kwargs)


def names(category: str) -> List[str]:
    """Registered names of a category (built-ins and whatever user code registered)."""
    _load(category)
    return sorted(_REGISTRY.get(category, {}))
