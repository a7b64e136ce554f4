"""Hugging Face tokenizer folders (BERT WordPiece, RoBERTa byte-level BPE, anything with a
``tokenizer.json``) through the ``tokenizers`` library — the engine of HF's fast tokenizers —
returning what run_clip.py feeds its model: ``input_ids`` and ``attention_mask`` padded to
``max_length`` and truncated the same way (``padding="max_length", truncation=True``).
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Union

import numpy as np

# NLLB's FLORES-200 language tokens (``eng_Latn``, ``ita_Latn``, ...)
_LANGUAGE_TOKEN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "vocab.txt", "spiece.model")


def is_tokenizer_folder(path: str) -> bool:
    """Whether ``path`` holds a tokenizer this module reads."""
    has = lambda name: os.path.isfile(os.path.join(path, name))  # noqa: E731
    return os.path.isdir(path) and (has("tokenizer.json") or has("vocab.txt") or has("spiece.model")
                                    or (has("vocab.json") and has("merges.txt")))


def _token(value) -> Optional[str]:
    return value.get("content") if isinstance(value, dict) else value


class _Encoding:
    def __init__(self, ids: List[int], attention_mask: List[int]):
        self.ids, self.attention_mask = ids, attention_mask


class _SentencePieceT5:
    """T5's tokenizer on a SentencePiece model (``spiece.model``) with the part of the
    ``tokenizers.Tokenizer`` interface :class:`HFTokenizer` uses: the pieces, then ``</s>``;
    truncation keeps room for ``</s>``, padding goes to the right (what Hugging Face's
    ``T5Tokenizer`` does with ``padding="max_length", truncation=True``)."""

    def __init__(self, model_file: str, eos_token: str):
        try:
            import sentencepiece
        except ImportError:
            raise ImportError("a SentencePiece tokenizer (spiece.model) needs the sentencepiece "
                              "package (pip install sentencepiece)") from None
        self.sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        self.eos_id = self.token_to_id(eos_token)
        self.max_length, self.pad_length, self.pad_id = None, None, 0

    def token_to_id(self, token: str) -> Optional[int]:
        token_id = self.sp.piece_to_id(token)
        return None if token_id == self.sp.unk_id() and token != self.sp.id_to_piece(token_id) else token_id

    def get_vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def enable_truncation(self, max_length: int) -> None:
        self.max_length = max_length

    def enable_padding(self, length: int, pad_id: int, pad_token: str) -> None:
        self.pad_length, self.pad_id = length, pad_id

    def encode_batch(self, texts: List[str]) -> List[_Encoding]:
        out = []
        for ids in self.sp.encode(list(texts)):
            if self.max_length is not None:
                ids = ids[:self.max_length - 1]
            ids = ids + [self.eos_id]
            mask = [1] * len(ids)
            if self.pad_length is not None and len(ids) < self.pad_length:
                pad = self.pad_length - len(ids)
                ids, mask = ids + [self.pad_id] * pad, mask + [0] * pad
            out.append(_Encoding(ids, mask))
        return out


class HFTokenizer:
    """``tokenizer(texts) -> {"input_ids": int32 (B, max_length), "attention_mask": ...}``.

    Args:
        folder: a tokenizer folder (``tokenizer.json``; or ``vocab.json`` + ``merges.txt``,
            RoBERTa-style; or ``vocab.txt``, BERT WordPiece, lower-cased unless
            ``tokenizer_config.json`` says ``do_lower_case: false``).
        max_length: pad/truncate length (run_clip.py's ``max_seq_length``, 128).
    """

    def __init__(self, folder: str, max_length: int = 128, language: Optional[str] = None):
        if not is_tokenizer_folder(folder):
            raise FileNotFoundError(f"{folder} is not a tokenizer folder: it needs tokenizer.json, "
                                    "vocab.json + merges.txt, or vocab.txt")
        self.folder = folder
        self.max_length = int(max_length)
        settings = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    settings.update(json.load(f))
        self.tokenizer = self._load(folder, settings)
        pad = _token(settings.get("pad_token")) or next(
            (t for t in ("<pad>", "[PAD]") if self.tokenizer.token_to_id(t) is not None), None)
        if pad is None or self.tokenizer.token_to_id(pad) is None:
            raise ValueError(f"{folder}: no padding token (pad_token in tokenizer_config.json)")
        self.pad_token, self.pad_token_id = pad, self.tokenizer.token_to_id(pad)
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(length=self.max_length, pad_id=self.pad_token_id,
                                      pad_token=pad)
        self.eos_token = _token(settings.get("eos_token")) or "</s>"
        self.language: Optional[str] = None
        if language is not None:
            self.set_language(language)

    @staticmethod
    def _load(folder: str, settings: Dict):
        from tokenizers import Tokenizer, processors
        from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer

        path = lambda name: os.path.join(folder, name)  # noqa: E731
        if os.path.isfile(path("tokenizer.json")):
            return Tokenizer.from_file(path("tokenizer.json"))
        if os.path.isfile(path("spiece.model")):  # T5 / mT5 repositories ship only this
            return _SentencePieceT5(path("spiece.model"), _token(settings.get("eos_token")) or "</s>")
        if os.path.isfile(path("vocab.json")):
            # RobertaTokenizer's behaviour: byte-level BPE, <s> ... </s> around the text
            bpe = ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"),
                                        add_prefix_space=bool(settings.get("add_prefix_space", False)),
                                        trim_offsets=True)
            tok = bpe._tokenizer
            cls, sep = _token(settings.get("cls_token")) or "<s>", _token(settings.get("sep_token")) or "</s>"
            tok.add_special_tokens([t for t in (cls, sep, _token(settings.get("pad_token")) or "<pad>",
                                                _token(settings.get("unk_token")) or "<unk>",
                                                _token(settings.get("mask_token")) or "<mask>")
                                    if tok.token_to_id(t) is not None])
            tok.post_processor = processors.RobertaProcessing(
                (sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)), trim_offsets=True,
                add_prefix_space=bool(settings.get("add_prefix_space", False)))
            return tok
        lower = bool(settings.get("do_lower_case", True))
        return BertWordPieceTokenizer(path("vocab.txt"), lowercase=lower,
                                      strip_accents=settings.get("strip_accents"))._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def languages(self) -> List[str]:
        """The language tokens a text can be marked with (NLLB's FLORES-200 codes such as
        ``ita_Latn``); empty for tokenizers without them."""
        added = getattr(self.tokenizer, "get_added_tokens_decoder", None)
        if added is None:
            return []
        return sorted(t.content for t in added().values() if t.special and _LANGUAGE_TOKEN.match(t.content))

    def set_language(self, language: str) -> None:
        """Mark every text as written in ``language`` (NLLB: ``[language] text </s>``), as
        Hugging Face's ``NllbTokenizerFast.set_src_lang_special_tokens`` does and open_clip's
        ``HFTokenizer.set_language`` calls; NLLB-CLIP's text tower reads the mark."""
        from tokenizers import processors

        known = self.languages
        if language not in known:
            raise ValueError(f"{self.folder}: no language token {language!r}"
                             + (f"; known: {', '.join(known[:8])}, ... ({len(known)})" if known
                                else " (this tokenizer has no language tokens)"))
        eos_id = self.tokenizer.token_to_id(self.eos_token)
        self.tokenizer.post_processor = processors.TemplateProcessing(
            single=[language, "$A", self.eos_token], pair=[language, "$A", "$B", self.eos_token],
            special_tokens=[(self.eos_token, eos_id), (language, self.tokenizer.token_to_id(language))])
        self.language = language

    def __call__(self, texts: Union[str, List[str]], max_length: Optional[int] = None
                 ) -> Dict[str, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        if max_length is not None and max_length != self.max_length:
            return HFTokenizer(self.folder, max_length, self.language)(texts)
        encodings = self.tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in encodings], np.int32),
                "attention_mask": np.array([e.attention_mask for e in encodings], np.int32)}

    def save(self, folder: str) -> None:
        """Copy the tokenizer files into ``folder`` (the layout HF's ``from_pretrained`` reads)."""
        import shutil

        os.makedirs(folder, exist_ok=True)
        for name in TOKENIZER_FILES:
            src = os.path.join(self.folder, name)
            if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(os.path.join(folder, name)):
                shutil.copyfile(src, os.path.join(folder, name))
