"""Tokenizers: CLIP's byte-level BPE (OpenAI's vocabulary bundled) and Hugging Face
tokenizer folders (BERT / RoBERTa) through the ``tokenizers`` library."""
from .bpe import DEFAULT_CONTEXT_LENGTH, CLIPTokenizer, tokenize
from .hf import HFTokenizer, is_tokenizer_folder

__all__ = ["CLIPTokenizer", "HFTokenizer", "is_tokenizer_folder", "tokenize", "DEFAULT_CONTEXT_LENGTH"]
