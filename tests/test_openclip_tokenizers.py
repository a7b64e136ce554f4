"""Tokenizers by config, as open_clip's ``get_tokenizer``: the configs that name a Hugging
Face tokenizer (CLIPA's BERT with its separator stripped, MetaCLIP 2's Unigram models with
their cleaning) give open_clip's ids on the same tokenizer files. The files are trained here
with ``tokenizers`` (WordPiece, Unigram); open_clip reads them through transformers."""
import json
import os

import numpy as np
import pytest
from open_clip.tokenizer import HFTokenizer as OpenClipHFTokenizer

import mindclip
from mindclip.tokenizer.openclip_hf import OpenCLIPHFTokenizer
from test_hub import offline_hub, put_in_hf_cache  # noqa: F401  (fixture)

CORPUS = ["a photo of a cat", "A diagram of a neural_network.", "two dogs playing in the snow",
          "une photo d'un chat", "ein Foto einer Katze!", "the quick brown fox jumps over the lazy dog",
          "red, green & blue cars", "<b>bold</b> claims about CLIP's zero-shot accuracy"] * 20
TEXTS = ["A photo of a CAT!", "  two\tdogs\n playing ", "neural_network diagram, (v2)",
         "une photo d'un chat", "&amp; html &lt;escaped&gt;", "x " * 80, ""]


def wordpiece_folder(path):
    """A lower-casing BERT WordPiece tokenizer (bert-base-uncased's kind)."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS, vocab_size=300,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    os.makedirs(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]",
                   "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]", "model_max_length": 512}, f)
    return str(path)


def unigram_folder(path):
    """A SentencePiece Unigram tokenizer ending each text with </s> (mT5's / XLM-V's kind)."""
    from tokenizers import SentencePieceUnigramTokenizer, processors

    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"],
                            unk_token="<unk>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    os.makedirs(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>",
                   "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 512}, f)
    return str(path)


def spiece_folder(path):
    """A T5 repository's tokenizer: only a SentencePiece model (spiece.model), as mT5's."""
    import sentencepiece

    os.makedirs(path)
    corpus = os.path.join(path, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(CORPUS))
    sentencepiece.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(path, "spiece"), vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    for name in ("corpus.txt", "spiece.vocab"):
        os.remove(os.path.join(path, name))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "extra_ids": 0}, f)
    return str(path)


def nllb_folder(path):
    """NLLB's kind: SentencePiece BPE with the 202 FLORES-200 language tokens, texts marked
    ``[language] text </s>`` (eng_Latn by default), loaded by transformers as NllbTokenizer."""
    from tokenizers import SentencePieceBPETokenizer, processors
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    tok = SentencePieceBPETokenizer()
    numbered = [f"photo {i} of a thing, view {i}." for i in range(40)]  # digits known: captions differ
    tok.train_from_iterator(CORPUS + numbered, vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tok.add_special_tokens(list(FAIRSEQ_LANGUAGE_CODES) + ["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="eng_Latn $A </s>", special_tokens=[("eng_Latn", tok.token_to_id("eng_Latn")), ("</s>", 2)])
    os.makedirs(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "NllbTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>", "src_lang": "eng_Latn",
                   "model_max_length": 512}, f)
    return str(path)


FOLDERS = {"wordpiece": wordpiece_folder, "unigram": unigram_folder, "spiece": spiece_folder}


@pytest.mark.parametrize("kind,kwargs,context", [
    ("wordpiece", {"strip_sep_token": True}, 32),          # CLIPA
    ("unigram", {"clean": "canonicalize"}, 77),            # MetaCLIP 2 with mT5
    ("unigram", {}, 77),                                   # MetaCLIP 2 with XLM-V
    ("wordpiece", {"clean": "lower"}, 16),
    ("spiece", {"clean": "canonicalize"}, 12),              # mT5's repository: spiece.model only
])
def test_ids_equal_open_clips_hf_tokenizer(tmp_path, kind, kwargs, context):
    folder = FOLDERS[kind](tmp_path / kind)
    expected = OpenClipHFTokenizer(folder, context_length=context, **kwargs)(TEXTS).numpy()
    ours = OpenCLIPHFTokenizer(folder, context_length=context, **kwargs)(TEXTS)
    assert ours.dtype == np.int32 and ours.shape == (len(TEXTS), context)
    np.testing.assert_array_equal(ours, expected)


def test_config_finds_its_tokenizer_in_the_hf_cache(offline_hub, tmp_path):  # noqa: F811
    folder = wordpiece_folder(tmp_path / "bert")
    put_in_hf_cache(offline_hub, "bert-base-uncased",
                    {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)})
    tokenizer = mindclip.get_tokenizer("ViT-L-14-CLIPA")  # the config names bert-base-uncased
    expected = OpenClipHFTokenizer(folder, context_length=32, strip_sep_token=True)(TEXTS).numpy()
    np.testing.assert_array_equal(tokenizer(TEXTS), expected)


def test_missing_tokenizer_files_are_an_error_naming_them(offline_hub):  # noqa: F811
    with pytest.raises(FileNotFoundError, match="'bert-base-uncased'"):
        mindclip.get_tokenizer("ViT-L-14-CLIPA")
    with pytest.raises(ValueError, match="unsupported tokenizer_kwargs"):
        OpenCLIPHFTokenizer(".", tokenizer_mode="clips")


def test_language_tokens_equal_hugging_faces_nllb_tokenizer(tmp_path):
    """NLLB-CLIP's texts carry their language: ``set_language`` (open_clip's name) gives the ids
    of transformers' NllbTokenizer for that ``src_lang``; a tokenizer without language tokens,
    or a token it does not have, is refused by name."""
    from transformers import AutoTokenizer

    folder = nllb_folder(tmp_path / "nllb")
    texts = ["una foto di un gatto", "a photo of a cat", "ein Foto einer Katze " * 6]
    for language in ("ita_Latn", "jpn_Jpan", "eng_Latn"):
        reference = AutoTokenizer.from_pretrained(folder, src_lang=language)
        expected = reference(texts, padding="max_length", max_length=12, truncation=True).input_ids
        ours = OpenCLIPHFTokenizer(folder, context_length=12, language=language)
        assert ours.hf.language == language and len(ours.languages) == 202
        np.testing.assert_array_equal(ours(texts), expected)
        np.testing.assert_array_equal(ours(texts, context_length=9)[:, 0], reference.convert_tokens_to_ids(language))
    marked = OpenCLIPHFTokenizer(folder, context_length=12)
    assert marked(texts)[0, 0] == reference.convert_tokens_to_ids("eng_Latn")  # the file's default
    marked.set_language("ukr_Cyrl")
    assert marked(texts)[0, 0] == reference.convert_tokens_to_ids("ukr_Cyrl")
    with pytest.raises(ValueError, match="no language token 'italian'; known: ace_Arab"):
        marked.set_language("italian")
    plain = OpenCLIPHFTokenizer(wordpiece_folder(tmp_path / "bert"))
    assert plain.languages == []
    with pytest.raises(ValueError, match="has no language tokens"):
        plain.set_language("ita_Latn")
