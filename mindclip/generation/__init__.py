"""Text generation for the families that write text (CoCa): open_clip's ``CoCa.generate``
(beam search, top-k and top-p sampling, with the same arguments, defaults and outputs) over a
model's compiled decoding step.

Decoding runs one compiled graph per (rows, buffer length): the tokens so far sit in a
buffer padded with the pad id, and the step returns the logits at the last real position. The
text tower and the decoder are causal, so the padding after that position changes nothing.
Buffer lengths come in a few buckets (8, 16, 32, ... capped at ``seq_len``): a generation
compiles at most four graphs instead of one per length, and each step recomputes a prefix at
most twice its length (one ``seq_len`` buffer throughout did 1.9x the work of the growing
prefix open_clip recomputes). A key/value cache would save recomputing the prefix, but needs
a graph per length or dynamic shapes; at caption lengths (<= 77 tokens) recomputing costs
less than those compiles on CPU.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .beam_search import beam_search
from .processors import min_length, repetition_penalty, softmax, top_k, top_p

GENERATION_TYPES = ("beam_search", "top_k", "top_p")
DEFAULT_SOT, DEFAULT_EOS = 49406, 49407  # CLIP's <start_of_text>, <end_of_text>


def buffer_length(n: int, seq_len: int) -> int:
    """The decode buffer for ``n`` tokens so far: the next power of two from 8, capped at
    ``seq_len``."""
    length = 8
    while length < n:
        length *= 2
    return min(length, seq_len)


def _decode_step(model: Any, image_tokens: Any, seq_len: int, pad_id: int):
    """``tokens (rows, n <= seq_len) -> logits (rows, vocab)`` at position ``n - 1``."""
    import mindspore as ms

    from ..models.compiled import compiled

    # the same at every step; mutable: a tuple of tensors is otherwise a graph constant
    context = ms.mutable(tuple(compiled(model, "decode_context")(image_tokens)))
    step = compiled(model, "decode_step")

    def run(tokens: np.ndarray) -> np.ndarray:
        rows, n = tokens.shape
        buffer = np.full((rows, buffer_length(n, seq_len)), pad_id, np.int32)
        buffer[:, :n] = tokens
        position = ms.Tensor(np.array([n - 1], np.int32))
        return step(context, ms.Tensor(buffer), position).asnumpy()

    return run


def _as_ids(value: Optional[Any], default: int) -> list:
    """Token ids given as an int, a list or an array (open_clip takes tensors too)."""
    if value is None:
        return [default]
    return [int(v) for v in np.asarray(value).reshape(-1)]


def generate(model: Any, images: Any, text: Optional[Any] = None, seq_len: int = 30,
             max_seq_len: int = 77, temperature: float = 1.0, generation_type: str = "beam_search",
             top_p: float = 0.1, top_k: int = 1, pad_token_id: Optional[int] = None,
             eos_token_id: Optional[Any] = None, sot_token_id: Optional[Any] = None,
             num_beams: int = 6, num_beam_groups: int = 3, min_seq_len: int = 5,
             stopping_criteria: Optional[Any] = None, repetition_penalty: float = 1.0,
             fixed_output_length: bool = False, seed: Optional[int] = None) -> np.ndarray:
    """Caption token ids of ``images`` ``(B, 3, S, S)``: open_clip's ``CoCa.generate``.

    ``beam_search`` (``num_beams`` in ``num_beam_groups`` groups) returns ``(B, <= seq_len)``
    ids from the start token; ``top_k``/``top_p`` sample (``temperature``, ``seed`` for
    numpy's generator; ``text`` an optional prompt). ``min_seq_len`` forbids the end token
    early, ``repetition_penalty`` divides repeated tokens' scores, ``fixed_output_length``
    pads every row to ``seq_len``. Ids default to CLIP's (start 49406, end 49407) and the
    model's pad id. ``stopping_criteria`` (transformers objects) are not supported.
    """
    from ..models.compiled import as_tensor, compiled
    from ..models.inputs import check_images

    if generation_type not in GENERATION_TYPES:
        raise ValueError(f"generation_type has to be one of {list(GENERATION_TYPES)}, got {generation_type!r}")
    if seq_len <= min_seq_len:
        raise ValueError(f"seq_len ({seq_len}) must be larger than min_seq_len ({min_seq_len})")
    if stopping_criteria is not None:
        raise ValueError("stopping_criteria is not supported; generation stops at seq_len or when "
                         "every text has ended")
    context = model.context_length
    if seq_len > context:
        raise ValueError(f"seq_len {seq_len} exceeds the text tower's context length {context}")
    images = as_tensor(images)
    check_images(images, model.image_size)
    sot = _as_ids(sot_token_id, DEFAULT_SOT)[0]
    eos_ids = _as_ids(eos_token_id, DEFAULT_EOS)
    pad_id = model.pad_id if pad_token_id is None else int(pad_token_id)
    was_training = model.training
    model.set_train(False)
    try:
        tokens = compiled(model, "image_tokens")(images)
        batch = tokens.shape[0]
        if generation_type == "beam_search":
            beams = as_tensor(np.repeat(tokens.asnumpy(), num_beams, axis=0))
            out = beam_search(_decode_step(model, beams, seq_len, pad_id), batch, sot, eos_ids, pad_id,
                              seq_len, num_beams, num_beam_groups, min_seq_len, repetition_penalty)
            if fixed_output_length and out.shape[1] < seq_len:
                out = np.concatenate([out, np.full((batch, seq_len - out.shape[1]), pad_id, out.dtype)], 1)
            return out
        step = _decode_step(model, tokens, seq_len, pad_id)
        rng = np.random.default_rng(seed)
        return _sample(step, batch, text, sot, eos_ids, pad_id, seq_len, max_seq_len, min_seq_len,
                       repetition_penalty, generation_type, top_k, top_p, temperature,
                       fixed_output_length, rng)
    finally:
        model.set_train(was_training)


def _sample(step, batch, text, sot, eos_ids, pad_id, seq_len, max_seq_len, min_seq_len, penalty,
            generation_type, k, p, temperature, fixed_output_length, rng) -> np.ndarray:
    """open_clip's sampling loop: per step, the live rows' logits through the processors and
    the top-k / top-p warper, softmax at ``temperature``, one draw; the end token is forced at
    ``seq_len``; ended rows get the pad id."""
    out = np.full((batch, 1), sot, np.int64) if text is None else np.asarray(text, np.int64)
    one_dim = out.ndim == 1
    out = out[None] if one_dim else out
    if out.shape[1] >= seq_len:
        raise ValueError(f"the text prompt has {out.shape[1]} tokens; seq_len ({seq_len}) must be longer")
    while True:
        x = out[:, -max_seq_len:]
        cur_len = x.shape[1]
        logits = step(x).astype(np.float32)
        ended = np.isin(out[:, -1], eos_ids) | (out[:, -1] == pad_id)
        sample = np.full((out.shape[0], 1), pad_id, np.int64)
        if ended.all():
            if not fixed_output_length:
                break
        else:
            live = ~ended
            scores = filtered_scores(x[live], logits[live], min_seq_len, eos_ids, penalty,
                                     generation_type, k, p)
            probs = softmax(scores / temperature)
            if cur_len + 1 == seq_len:
                sample[live, 0] = eos_ids[0]
            else:
                sample[live, 0] = [rng.choice(len(row), p=row / row.sum()) for row in probs.astype(np.float64)]
        out = np.concatenate([out, sample], axis=1)
        if out.shape[1] >= seq_len:
            break
    return out[0] if one_dim else out


def filtered_scores(tokens: np.ndarray, logits: np.ndarray, min_seq_len: int, eos_ids, penalty: float,
                    generation_type: str, k: int, p: float) -> np.ndarray:
    """What one sampling step draws from (before the temperature): open_clip's processors
    (minimum length, repetition penalty) then its top-k or top-p warper."""
    scores = repetition_penalty(tokens, min_length(tokens, logits, min_seq_len, eos_ids), penalty)
    return top_k(scores, k) if generation_type == "top_k" else top_p(scores, p)


def decode_captions(tokenizer: Any, ids: np.ndarray) -> list:
    """Texts of generated ids, cleaned as open_clip's examples clean them: up to the first
    end-of-text, start-of-text removed, surrounding spaces stripped."""
    rows = np.asarray(ids)
    rows = rows[None] if rows.ndim == 1 else rows
    return [tokenizer.decode_caption([int(t) for t in row]) for row in rows]


__all__ = ["generate", "decode_captions", "filtered_scores", "GENERATION_TYPES"]
