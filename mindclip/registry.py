"""The one registry: everything a run config names (datasets, losses, optimizers, schedules,
tasks, pipelines) is registered here under a category and built by name.

Models are the exception only in where their definitions live: architectures are JSON
files (``mindclip/models/model_configs``), registered here under ``model`` through
:func:`mindclip.models.create_model`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

_REGISTRY: Dict[str, Dict[str, Callable[..., Any]]] = {}

CATEGORIES = ("model", "dataset", "loss", "optimizer", "lr_schedule", "task", "pipeline")


def register(category: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator registering a class or factory function as ``category/name``."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown registry category {category!r}; valid: {list(CATEGORIES)}")

    def wrap(obj: Callable) -> Callable:
        table = _REGISTRY.setdefault(category, {})
        if name in table and table[name] is not obj:
            raise ValueError(f"{category} {name!r} is registered twice")
        table[name] = obj
        return obj

    return wrap


def _ensure_loaded() -> None:
    # Registration happens on import; import every module that registers something.
    from . import data, losses, pipelines, training  # noqa: F401
    from .evaluation import tasks  # noqa: F401
    from .models import factory  # noqa: F401


def get(category: str, name: str) -> Callable[..., Any]:
    """The registered object, or an error listing the valid names of the category."""
    _ensure_loaded()
    table = _REGISTRY.get(category, {})
    if name not in table:
        raise KeyError(f"unknown {category} {name!r}; valid: {sorted(table)}")
    return table[name]


def build(category: str, name: str, **kwargs: Any) -> Any:
    """Instantiate ``category/name`` with ``kwargs``."""
    return get(category, name)(**kwargs)


def names(category: str) -> List[str]:
    _ensure_loaded()
    return sorted(_REGISTRY.get(category, {}))
