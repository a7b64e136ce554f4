"""open_clip's ``HFTokenizer``: the tokenizer of a Hugging Face tokenizer repository
(``hf_tokenizer_name``: BERT for CLIPA, XLM-V and mT5 for MetaCLIP 2, ...) behind open_clip's
text cleaning, returning ids the way CLIP towers take them: one int32 array ``(B, context)``
padded to the context length, with ``strip_sep_token`` zeroing the separator (CLIPA)."""
from __future__ import annotations

import string
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .bpe import basic_clean, whitespace_clean
from .hf import HFTokenizer

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text: str) -> str:
    """big_vision's canonical text (open_clip's ``clean: canonicalize``): underscores to
    spaces, punctuation removed, lower case, single spaces."""
    return " ".join(text.replace("_", " ").translate(_PUNCTUATION).lower().split())


def hf_siglip_canonicalize(text: str) -> str:
    """Hugging Face's ``SiglipTokenizer`` text (its ``canonicalize_text``, lower-casing on):
    lower case, punctuation removed (underscores too), single spaces; no ftfy."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


CLEANERS = {
    "whitespace": lambda t: whitespace_clean(basic_clean(t)),
    "lower": lambda t: whitespace_clean(basic_clean(t)).lower(),
    "canonicalize": lambda t: canonicalize(basic_clean(t)),
    "hf_siglip": hf_siglip_canonicalize,  # mindclip's: the tokenizer of converted HF folders
}


class OpenCLIPHFTokenizer:
    """``tokenizer(texts) -> int32 (B, context_length)``, equal to open_clip's
    ``HFTokenizer(name, context_length, **tokenizer_kwargs)`` on the same tokenizer files.

    Args:
        folder: the tokenizer files of ``hf_tokenizer_name`` (``tokenizer.json`` or the
            BERT/RoBERTa vocabulary files, with ``tokenizer_config.json``).
        context_length: pad/truncate length.
        clean: ``whitespace`` (open_clip's default), ``lower`` or ``canonicalize``.
        strip_sep_token: replace the separator token's id with 0.
        language: the language token texts are marked with (NLLB's, e.g. ``ita_Latn``).
    """

    def __init__(self, folder: str, context_length: int = 77, clean: str = "whitespace",
                 strip_sep_token: bool = False, language: Optional[str] = None, **kwargs: Any):
        if clean not in CLEANERS:
            raise ValueError(f"tokenizer_kwargs.clean {clean!r}: valid are {sorted(CLEANERS)}")
        if kwargs:
            raise ValueError(f"unsupported tokenizer_kwargs {sorted(kwargs)}; supported: clean, "
                             "strip_sep_token, language")
        self.folder = folder
        self.context_length = int(context_length)
        self.clean = CLEANERS[clean]
        self.hf = HFTokenizer(folder, max_length=self.context_length, language=language)
        self.sep_token_id = self._sep_id() if strip_sep_token else None

    def _sep_id(self) -> int:
        for token in ("[SEP]", "</s>"):
            token_id = self.hf.tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        raise ValueError(f"{self.folder}: strip_sep_token, but no [SEP] or </s> token")

    @property
    def vocab_size(self) -> int:
        return self.hf.vocab_size

    @property
    def languages(self) -> List[str]:
        """Language tokens the tokenizer can mark texts with (NLLB's), else empty."""
        return self.hf.languages

    def set_language(self, language: str) -> None:
        """open_clip's ``HFTokenizer.set_language``: texts are marked as ``language`` (NLLB-CLIP)."""
        self.hf.set_language(language)

    def __call__(self, texts: Union[str, List[str]], context_length: Optional[int] = None) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = self.hf([self.clean(t) for t in texts], max_length=context_length)["input_ids"]
        if self.sep_token_id is not None:
            ids = np.where(ids == self.sep_token_id, 0, ids).astype(np.int32)
        return ids

    def save(self, folder: str) -> None:
        self.hf.save(folder)


def tokenizer_options(text_cfg: Any) -> Dict[str, Any]:
    """open_clip's ``tokenizer_kwargs`` of a text config (refusing a ``tokenizer_mode``)."""
    if getattr(text_cfg, "tokenizer_mode", None):
        raise ValueError(f"text_cfg.tokenizer_mode {text_cfg.tokenizer_mode!r} is not implemented")
    return dict(text_cfg.tokenizer_kwargs or {})
