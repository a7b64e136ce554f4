"""CLIP's byte-level BPE tokenizer.

Produces exactly the ids of OpenAI's / open_clip's tokenizer: same text cleaning (ftfy,
HTML unescaped twice, whitespace folded, lower case), same pre-tokenisation pattern
(special tokens first, so a literal ``<start_of_text>`` in a caption is the special token,
as in the reference), same merges, and the same truncation rule (cut to the context
length, then force the last id to end-of-text). The vocabulary file is OpenAI's
(MIT, (c) 2021 OpenAI; see NOTICE beside it).
"""
from __future__ import annotations

import gzip
import html
import os
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import ftfy
import numpy as np
import regex

DEFAULT_CONTEXT_LENGTH = 77
SOT, EOT = "<start_of_text>", "<end_of_text>"
# The vocabulary keeps the first 48,894 merges (49152 - 256 byte symbols - 2 specials).
NUM_MERGES = 49152 - 256 - 2


def default_bpe_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")


@lru_cache()
def bytes_to_unicode() -> Dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters.

    Printable latin-1 bytes map to themselves; the rest (whitespace, control) are shifted
    past 255 so that BPE never sees whitespace inside a symbol.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    # Insertion order matters: the vocabulary lists printable bytes first, then the rest.
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return mapping


def basic_clean(text: str) -> str:
    """open_clip's: fix mojibake, unescape HTML twice, strip."""
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def whitespace_clean(text: str) -> str:
    return " ".join(text.split())


def clean_text(text: str) -> str:
    return whitespace_clean(basic_clean(text)).lower()


class CLIPTokenizer:
    """Byte-level BPE tokenizer of CLIP.

    ``tokenizer(texts)`` returns an int32 array ``(N, context_length)``: start-of-text,
    tokens, end-of-text, zero padding.
    """

    def __init__(self, bpe_path: Optional[str] = None,
                 context_length: int = DEFAULT_CONTEXT_LENGTH,
                 additional_special_tokens: Sequence[str] = (), mask_token: Optional[str] = None):
        path = bpe_path or default_bpe_path()
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges: List[Tuple[str, str]] = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        self.special_tokens = [SOT, EOT] + list(additional_special_tokens)
        # DeCLIP's vocabulary puts its mask token before start/end-of-text (ids 49406-49408);
        # text never tokenises to it (it is not in the pattern), only MLM masking inserts it.
        vocab += ([mask_token] if mask_token else []) + self.special_tokens
        self.encoder: Dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: Dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks: Dict[Tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self._cache: Dict[str, Tuple[str, ...]] = {t: (t,) for t in self.special_tokens}
        specials = "|".join(regex.escape(t) for t in self.special_tokens)
        self.pattern = regex.compile(
            specials + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        self.context_length = context_length
        self.sot_token_id = self.encoder[SOT]
        self.eot_token_id = self.encoder[EOT]
        self.vocab_size = len(self.encoder)
        self.mask_token_id = self.encoder[mask_token] if mask_token else None

    def _bpe(self, token: str) -> Tuple[str, ...]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            # Merge every occurrence of the best-ranked adjacent pair, left to right.
            ranked = [(self.bpe_ranks.get(pair, NUM_MERGES), pair) for pair in zip(word, word[1:])]
            rank, best = min(ranked)
            if rank == NUM_MERGES:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = tuple(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: List[int] = []
        for piece in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; padding after the last end-of-text is dropped, special tokens too
        unless ``skip_special_tokens`` is False."""
        ids = [int(i) for i in ids]
        if self.eot_token_id in ids:  # what follows the last end-of-text is padding
            ids = ids[:len(ids) - ids[::-1].index(self.eot_token_id)]
        specials = self.special_tokens + ([self.decoder[self.mask_token_id]]
                                          if self.mask_token_id is not None else [])
        pieces = [self.decoder[i] for i in ids
                  if not (skip_special_tokens and self.decoder[i] in specials)]
        text = "".join(pieces)
        if skip_special_tokens or not any(t in text for t in self.special_tokens):
            raw = bytearray(self.byte_decoder[c] for c in text)
            return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()
        # Special tokens are not byte-encoded: decode the text around them.
        out = []
        for part in regex.split("(" + "|".join(regex.escape(t) for t in self.special_tokens) + ")", text):
            if part in self.special_tokens:
                out.append(part)
            elif part:
                out.append(bytearray(self.byte_decoder[c] for c in part)
                           .decode("utf-8", errors="replace").replace("</w>", " "))
        return "".join(out).strip()

    def decode_caption(self, ids: Iterable[int]) -> str:
        """A generated caption's text, as open_clip's examples read one: the tokens up to the
        first end-of-text, the start-of-text dropped, surrounding spaces stripped."""
        ids = [int(i) for i in ids]
        if self.eot_token_id in ids:
            ids = ids[:ids.index(self.eot_token_id)]
        return self.decode([i for i in ids if i != self.sot_token_id], skip_special_tokens=False)

    def batch_decode(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> List[str]:
        return [self.decode(row, skip_special_tokens) for row in batch]

    def __call__(self, texts: Union[str, Sequence[str]],
                 context_length: Optional[int] = None) -> np.ndarray:
        """Tokenize one string or a list into an int32 array ``(N, context_length)``."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length < 2:
            raise ValueError(f"context_length must be at least 2, got {length}")
        out = np.zeros((len(texts), length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[row, :len(ids)] = ids
        return out


@lru_cache(maxsize=4)
def _shared_tokenizer(context_length: int) -> CLIPTokenizer:
    return CLIPTokenizer(context_length=context_length)


def tokenize(texts: Union[str, Sequence[str]], context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
    """Tokenize with a process-wide default tokenizer (OpenAI's ``clip.tokenize``)."""
    return _shared_tokenizer(context_length)(texts)
