"""open_clip's CoCa beam search: Hugging Face's group beam search (``BeamSearchScorer`` with
``num_beam_groups``, length penalty 1, no early stopping) over the decoder's raw logits plus
the running beam scores, as ``CoCa._generate_beamsearch`` runs it (without a diversity
penalty). Scores are float32 as in PyTorch; finished hypotheses are ranked by score divided by
their length."""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

from .processors import min_length, repetition_penalty

# A decoding step: token ids (rows, length) -> next-token logits (rows, vocab).
Step = Callable[[np.ndarray], np.ndarray]


class BeamHypotheses:
    """The best ``num_beams`` finished hypotheses of one (image, group)."""

    def __init__(self, num_beams: int, length_penalty: float = 1.0):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.beams: List[Tuple[float, np.ndarray]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def add(self, hyp: np.ndarray, sum_logprobs: float, generated_len: int) -> None:
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / cur_len ** self.length_penalty


class GroupBeamScorer:
    """Hugging Face's ``BeamSearchScorer`` (its ``process``/``finalize``) for ``batch``
    images, ``num_beams`` beams in ``num_beam_groups`` groups, one hypothesis kept."""

    def __init__(self, batch: int, num_beams: int, num_beam_groups: int):
        if num_beams <= 1:
            raise ValueError(f"num_beams has to be an integer strictly greater than 1, got {num_beams}")
        if num_beams % num_beam_groups:
            raise ValueError(f"num_beams ({num_beams}) must be divisible by num_beam_groups ({num_beam_groups})")
        self.num_beams, self.num_beam_groups = num_beams, num_beam_groups
        self.group_size = num_beams // num_beam_groups
        self.hyps = [BeamHypotheses(self.group_size) for _ in range(batch * num_beam_groups)]
        self.done = [False] * (batch * num_beam_groups)

    @property
    def is_done(self) -> bool:
        return all(self.done)

    def process(self, tokens: np.ndarray, scores: np.ndarray, next_tokens: np.ndarray,
                next_indices: np.ndarray, pad_id: int, eos_ids, group: int):
        """Next beams of one group from its ``2 * group_size`` best candidates per image."""
        cur_len = tokens.shape[-1] + 1
        batch = len(self.hyps) // self.num_beam_groups
        g = self.group_size
        beam_scores = np.zeros((batch, g), np.float32)
        beam_tokens = np.zeros((batch, g), np.int64)
        beam_indices = np.zeros((batch, g), np.int64)
        for b in range(batch):
            bg = b * self.num_beam_groups + group
            if self.done[bg]:
                beam_tokens[b, :] = pad_id
                continue
            filled = 0
            for rank, (token, score, index) in enumerate(zip(next_tokens[b], scores[b], next_indices[b])):
                row = b * g + int(index)
                if int(token) in eos_ids:
                    if rank >= g:
                        continue
                    self.hyps[bg].add(tokens[row].copy(), float(score), cur_len)
                else:
                    beam_scores[b, filled], beam_tokens[b, filled], beam_indices[b, filled] = score, token, row
                    filled += 1
                if filled == g:
                    break
            if filled < g:
                raise ValueError(f"at most {g} candidates can end the text; got {next_tokens[b]}")
            self.done[bg] = self.done[bg] or self.hyps[bg].is_done(float(scores[b].max()), cur_len)
        return beam_scores.reshape(-1), beam_tokens.reshape(-1), beam_indices.reshape(-1)

    def finalize(self, tokens: np.ndarray, beam_scores: np.ndarray, max_length: int, pad_id: int,
                 eos_ids) -> np.ndarray:
        for bg, hyp in enumerate(self.hyps):
            if self.done[bg]:
                continue
            for i in range(self.group_size):
                row = bg * self.group_size + i
                hyp.add(tokens[row], float(beam_scores[row]), tokens.shape[-1])
        batch = len(self.hyps) // self.num_beam_groups
        best = []
        for b in range(batch):
            candidates = [beam for hyp in self.hyps[b * self.num_beam_groups:(b + 1) * self.num_beam_groups]
                          for beam in hyp.beams]
            best.append(sorted(candidates, key=lambda x: x[0])[-1][1])  # stable: the last of equals
        lengths = [len(h) for h in best]
        width = min(max(lengths) + 1, max_length) if max_length is not None else max(lengths) + 1
        out = np.full((batch, width), pad_id, np.int64)
        for i, hyp in enumerate(best):
            out[i, :len(hyp)] = hyp
            if len(hyp) < width:
                out[i, len(hyp)] = list(eos_ids)[0]
        return out


def beam_search(step: Step, batch: int, sot_id: int, eos_ids, pad_id: int, seq_len: int,
                num_beams: int, num_beam_groups: int, min_seq_len: int,
                penalty: float) -> np.ndarray:
    """Token ids ``(batch, <= seq_len)`` (start token first) by open_clip's group beam search;
    ``step`` maps the ``(batch * num_beams, length)`` beams to their next-token logits."""
    scorer = GroupBeamScorer(batch, num_beams, num_beam_groups)
    g = scorer.group_size
    tokens = np.full((batch * num_beams, 1), sot_id, np.int64)
    beam_scores = np.full((batch, num_beams), -1e9, np.float32)
    beam_scores[:, ::g] = 0  # the first beam of each group starts, the others wait
    beam_scores = beam_scores.reshape(-1)
    while True:
        current = np.zeros(batch * num_beams, np.int64)
        logits = step(tokens).astype(np.float32)
        for group in range(num_beam_groups):
            rows = np.array([b * num_beams + i for b in range(batch) for i in range(group * g, (group + 1) * g)])
            group_tokens = tokens[rows]
            scores = repetition_penalty(group_tokens, min_length(group_tokens, logits[rows], min_seq_len, eos_ids),
                                        penalty)
            vocab = scores.shape[-1]
            candidates = (scores + beam_scores[rows][:, None]).reshape(batch, g * vocab)
            order = np.argsort(-candidates, axis=1, kind="stable")[:, :2 * g]
            top = np.take_along_axis(candidates, order, axis=1)
            next_scores, next_tokens, next_indices = scorer.process(
                group_tokens, top, order % vocab, order // vocab, pad_id, eos_ids, group)
            beam_scores[rows] = next_scores
            tokens[rows] = group_tokens[next_indices]
            current[rows] = next_tokens
        tokens = np.concatenate([tokens, current[:, None]], axis=1)
        if scorer.is_done or tokens.shape[1] >= seq_len:
            break
    return scorer.finalize(tokens, beam_scores, seq_len, pad_id, eos_ids)
