"""The tokenizer must produce open_clip's ids on every input."""
import gzip
import hashlib

import numpy as np
import pytest

from mindclip import get_tokenizer, tokenize
from mindclip.tokenizer import CLIPTokenizer
from mindclip.tokenizer.bpe import default_bpe_path

STRINGS = [
    "", " ", "a photo of a cat", "A PHOTO OF A CAT.", "a photo of the number seven",
    "Emoji 😀🎉👍🏽 and flags 🇫🇷", "ünïcödé çàfé naïve résumé", "中文字符和日本語のテキスト",
    "한국어 텍스트", "Ελληνικά κείμενο", "русский текст", "עברית", "العربية",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39;",
    "&amp;amp; double-escaped &amp;lt;tag&amp;gt;", "<b>html</b> <i>tags</i>",
    "123 4567 89.01 1,000,000 3rd 2nd", "phone: +1-555-0100, zip 90210",
    "it's they're we've I'm you'll he'd don't", "IT'S THEY'RE WE'VE",
    "<start_of_text>", "literal <end_of_text> inside", "<START_OF_TEXT> upper-case special",
    "tabs\tand\nnewlines\r\n   and   spaces", "\u00a0non-breaking\u2003em space",
    "mojibake: Ã©tÃ© â€œquotesâ€\x9d", "hyphen-ated under_scored dotted.name",
    "!!!???...;;;", "$100 @user #hashtag %50 ^caret *star", "C++ / C# / F# / .NET",
    "a" * 300, "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x " * 100, "the quick brown fox jumps over the lazy dog " * 10,
    "https://example.com/path?query=1&b=2", "email@example.com",
]


@pytest.fixture(scope="module")
def reference():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def ours():
    return CLIPTokenizer()


def test_vocab_file_is_openais():
    with open(default_bpe_path(), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    with gzip.open(default_bpe_path()) as f:
        assert f.readline().startswith(b"\"bpe_simple_vocab_16e6.txt#version")


@pytest.mark.parametrize("text", STRINGS)
def test_ids_equal_open_clip(reference, ours, text):
    expected = reference([text]).numpy()
    got = ours([text])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_batch_equals_open_clip(reference, ours):
    np.testing.assert_array_equal(ours(STRINGS), reference(STRINGS).numpy())


@pytest.mark.parametrize("context_length", [2, 5, 16, 77, 100])
def test_truncation_rule_equals_open_clip(reference, ours, context_length):
    long_captions = [STRINGS[-3], "a " * 80 + "cat", STRINGS[5] * 10]
    expected = reference(long_captions, context_length=context_length).numpy()
    got = ours(long_captions, context_length=context_length)
    np.testing.assert_array_equal(got, expected)
    for row, text in zip(got, long_captions):
        if len(ours.encode(text)) + 2 > context_length:  # truncated rows end in end-of-text
            assert row[-1] == ours.eot_token_id


def test_special_ids_and_vocab(reference, ours):
    assert ours.vocab_size == 49408 == len(reference.encoder)
    assert (ours.sot_token_id, ours.eot_token_id) == (49406, 49407)
    assert ours.encoder == reference.encoder


def test_decode_round_trip(ours):
    ids = ours(["a photo of a cat", "Hello,   World!"])
    assert ours.batch_decode(ids) == ["a photo of a cat", "hello , world !"]
    assert ours.decode(ids[0], skip_special_tokens=False) == \
        "<start_of_text>a photo of a cat <end_of_text>"


def test_module_helpers(ours):
    np.testing.assert_array_equal(tokenize("a dog"), ours("a dog"))
    assert get_tokenizer("ViT-B-32").context_length == 77
    with pytest.raises(ValueError, match="context_length"):
        ours("x", context_length=1)
