"""CLIP_benchmark's published class names and zero-shot templates (``clip_benchmark_lists/``,
MIT, see its NOTICE), in English and the languages it ships (ar, cn, it, jp), looked up by
dataset name as CLIP_benchmark looks them up."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

FOLDER = os.path.join(os.path.dirname(__file__), "clip_benchmark_lists")
LANGUAGES = ("en", "ar", "cn", "it", "jp")
_TEMPLATE_FALLBACK = "imagenet1k"  # CLIP_benchmark's templates for a dataset it has none for


@lru_cache(maxsize=None)
def _table(language: str, what: str) -> Dict[str, List[str]]:
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: CLIP_benchmark publishes class names and templates "
                         f"in {list(LANGUAGES)}")
    with open(os.path.join(FOLDER, f"{language}_{what}.json"), encoding="utf-8") as f:
        return json.load(f)


def lookup_keys(dataset: str) -> List[str]:
    """``wds/vtab/cifar10`` -> ``wds/vtab/cifar10``, ``vtab/cifar10``, ``cifar10``."""
    keys = [dataset]
    rest = dataset.split("/", 1)[1] if dataset.startswith("wds/") else dataset
    for key in (rest, rest.rsplit("/", 1)[-1]):
        if key not in keys:
            keys.append(key)
    return keys


def positional(templates: Sequence[str]) -> List[str]:
    """CLIP_benchmark writes ``{c}`` for the class; mindclip's templates take ``{}``."""
    return [t.replace("{c}", "{}") for t in templates]


def published_prompts(dataset: str, language: str = "en") -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """``(class names or None, templates or None)`` of ``dataset`` in ``language``; English
    templates fall back to ImageNet's, as CLIP_benchmark's do."""
    names = _first(_table(language, "classnames"), lookup_keys(dataset))
    templates = _first(_table(language, "zeroshot_classification_templates"), lookup_keys(dataset))
    if templates is None and language == "en":
        templates = _table(language, "zeroshot_classification_templates")[_TEMPLATE_FALLBACK]
    return (list(names) if names else None), (positional(templates) if templates else None)


def _first(table: Dict[str, List[str]], keys: Sequence[str]) -> Optional[List[str]]:
    return next((table[k] for k in keys if k in table), None)
