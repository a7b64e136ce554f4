"""CLIP tokenizer: byte-level BPE with OpenAI's bundled vocabulary."""
from .bpe import DEFAULT_CONTEXT_LENGTH, CLIPTokenizer, tokenize

__all__ = ["CLIPTokenizer", "tokenize", "DEFAULT_CONTEXT_LENGTH"]
