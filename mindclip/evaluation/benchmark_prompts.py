"""CLIP_benchmark's published class names and zero-shot templates (``clip_benchmark_lists/``,
MIT, see its NOTICE), in English and the languages it ships (ar, cn, it, jp), looked up by
dataset name as CLIP_benchmark looks them up; and the language token NLLB-CLIP's tokenizer marks
the texts with, from the same language code."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


# CLIP_benchmark's language codes -> NLLB's FLORES-200 tokens (its models/nllb_clip.py lang_map;
# FLORES codes themselves map to themselves).
FLORES_CODES = {
    "en": "eng_Latn", "es": "spa_Latn", "it": "ita_Latn", "ko": "kor_Hang", "ru": "rus_Cyrl",
    "zh": "zho_Hant", "de": "deu_Latn", "fr": "fra_Latn", "jp": "jpn_Jpan", "cn": "zho_Hant",
    "zhm": "yue_Hant", "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn",
    "el": "ell_Grek", "fa": "pes_Arab", "fi": "fin_Latn", "fil": "tgl_Latn", "hi": "hin_Deva",
    "hr": "hrv_Latn", "hu": "hun_Latn", "ja": "jpn_Jpan", "id": "ind_Latn", "he": "heb_Hebr",
    "mi": "mri_Latn", "nl": "nld_Latn", "no": "nno_Latn", "pl": "pol_Latn", "pt": "por_Latn",
    "quz": "quy_Latn", "ro": "ron_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "te": "tel_Telu",
    "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn",
}


def mark_language(tokenizer: Any, language: str) -> Optional[str]:
    """Mark the texts of a tokenizer that has language tokens (NLLB-CLIP's) as ``language``,
    as CLIP_benchmark does before it evaluates an NLLB-CLIP model; returns the token set, or
    None for a tokenizer without language tokens (CLIP's BPE, XLM-R, mT5: the text alone)."""
    if not getattr(tokenizer, "languages", None):
        return None
    token = FLORES_CODES.get(language, language)
    tokenizer.set_language(token)
    return token


def _first(table: Dict[str, List[str]], keys: Sequence[str]) -> Optional[List[str]]:
    return next((table[k] for k in keys if k in table), None)
