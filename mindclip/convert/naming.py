"""Parameter-name translation between open_clip/OpenAI, MindFormers 1.x and mindclip.

open_clip (== OpenAI) names are the pivot: every source is first brought to them, and the
reverse conversion writes them. Shapes and layouts are shared (Dense/Conv weights are
stored like PyTorch's), so translation is renaming only.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import numpy as np

# Keys that OpenAI/open_clip files carry but that are not weights.
IGNORED_KEYS = {"attn_mask", "input_resolution", "context_length", "vocab_size"}
TEXT_ROOTS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "cls_emb", "proj.",
              "text_projection")

_LN = r"(ln_pre|ln_post|ln_1_kv|ln_1|ln_2|ln_final|ln_q|ln_k)"
_BN = r"(bn\d|downsample\.1)"
# (module pattern, PyTorch suffix, MindSpore suffix) for norm parameters.
_NORM_SUFFIXES = [(_LN, "weight", "gamma"), (_LN, "bias", "beta"), (_BN, "weight", "gamma"),
                  (_BN, "bias", "beta"), (_BN, "running_mean", "moving_mean"),
                  (_BN, "running_var", "moving_variance")]
# (PyTorch name ending, MindSpore name ending) for everything else that differs.
_RENAMES = [("attn.in_proj_weight", "attn.in_proj.weight"), ("attn.in_proj_bias", "attn.in_proj.bias"),
            # nn.MultiheadAttention with keys narrower or wider than its queries (CoCa's pooler)
            ("attn.q_proj_weight", "attn.q_proj.weight"), ("attn.k_proj_weight", "attn.k_proj.weight"),
            ("attn.v_proj_weight", "attn.v_proj.weight"),
            ("token_embedding.weight", "token_embedding.embedding_table")]
_WHOLE = r"(?<![A-Za-z0-9_])"  # a rename matches whole module names ("attn.", not "self_attn.")
_RULES: List[Tuple[str, str]] = (
    [(rf"{m}\.{t}$", rf"\1.{ms}") for m, t, ms in _NORM_SUFFIXES]
    + [(_WHOLE + re.escape(t) + "$", ms) for t, ms in _RENAMES])
_REVERSE: List[Tuple[str, str]] = (
    [(rf"{m}\.{ms}$", rf"\1.{t}") for m, t, ms in _NORM_SUFFIXES]
    + [(_WHOLE + re.escape(ms) + "$", t) for t, ms in _RENAMES])


def _apply(name: str, rules: List[Tuple[str, str]]) -> str:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return name


def strip_prefix(state: Dict[str, np.ndarray], prefix: str = "module.") -> Dict[str, np.ndarray]:
    """Drop a DataParallel-style prefix carried by every key."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def openclip_to_mindclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """open_clip/OpenAI state dict (either text layout) -> mindclip parameter names."""
    out = {}
    for name, value in flat_text_layout(state).items():
        if name in IGNORED_KEYS or name.endswith("num_batches_tracked"):
            continue
        # a timm trunk keeps timm's names (align_names gives MindSpore's suffixes where the
        # model has them); CLIP's rules would rename, say, ConvNeXt's downsample.1 as a BatchNorm
        new = name if name.startswith(TIMM_TRUNK) else _apply(name, _RULES)
        if new.startswith(TEXT_ROOTS):
            new = "text." + new
        out[new] = value
    return out


def flat_text_layout(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """open_clip's ``custom_text`` layout (the text tower under ``text.``) -> the flat one
    OpenAI's CLIP uses (its parts at the top level); other state dicts are returned as is."""
    if not is_custom_text_layout(state):
        return state
    return {(k[len("text."):] if k.startswith("text.") else k): v for k, v in state.items()}


def is_custom_text_layout(keys) -> bool:
    """open_clip's text tower under ``text.`` (its own or a Hugging Face one), PyTorch names."""
    keys = set(keys)
    return any(k.startswith("text.") for k in keys) and not _is_mindclip(keys)


def _is_mindclip(keys) -> bool:
    # every text tower's token embedding is an nn.Embedding here: its table has MindSpore's name
    return any(k.startswith("text.") and k.endswith(".embedding_table") for k in keys)


def mindformers_to_mindclip(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """MindFormers 1.x CLIP checkpoint -> mindclip names (only the text tower is re-rooted)."""
    return {("text." + k if k.startswith(TEXT_ROOTS) else k): v for k, v in state.items()}


# MindSpore's suffixes of Hugging Face modules (norms, embeddings) <-> PyTorch's.
_MS_SUFFIXES = {"gamma": "weight", "beta": "bias", "embedding_table": "weight",
                "moving_mean": "running_mean", "moving_variance": "running_var"}


def align_names(tensors: Dict[str, np.ndarray], expected) -> Dict[str, np.ndarray]:
    """Rename PyTorch suffixes (``weight``/``bias``) to MindSpore's (``gamma``/``beta``,
    ``embedding_table``) where the model's own parameter names (``expected``) say so: the
    Hugging Face text towers, whose module names vary by architecture."""
    expected = set(expected)
    out = {}
    for name, value in tensors.items():
        if name not in expected:
            stem, _, last = name.rpartition(".")
            found = [f"{stem}.{ms}" for ms, pt in _MS_SUFFIXES.items()
                     if pt == last and f"{stem}.{ms}" in expected]
            if len(found) == 1:
                name = found[0]
        out[name] = value
    return out


# timm trunks (open_clip's ``visual.trunk.``) keep timm's names; only their norms' suffixes
# differ (``norm1``, ``fc_norm``, ``norm_pre``, ``attn.norm``, ``q_norm``, a conv stem's ``bn``
# with its running statistics), not LayerScale's ``ls1.gamma``, ``gamma`` in PyTorch too.
TIMM_TRUNK = "visual.trunk."
_TIMM_NORM = re.compile(r"(?<=[._])(\w*norm\w*|bn)\.(gamma|beta|moving_mean|moving_variance)$")


def timm_trunk_name_to_torch(name: str) -> str:
    """A mindclip parameter name of a timm trunk -> timm's."""
    return _TIMM_NORM.sub(lambda m: f"{m.group(1)}.{_MS_SUFFIXES[m.group(2)]}", name)


def mindclip_to_openclip(state: Dict[str, np.ndarray], custom_text: bool = False,
                         hf_text: bool = False) -> Dict[str, np.ndarray]:
    """mindclip names -> an open_clip ``CLIP`` state dict (BN step counters added at 0); the
    text tower under ``text.`` for a ``custom_text`` architecture, else at the top level;
    ``hf_text``: a Hugging Face text tower, whose MindSpore suffixes go back to PyTorch's."""
    out = {}
    for name, value in state.items():
        new = timm_trunk_name_to_torch(name) if name.startswith(TIMM_TRUNK) else _apply(name, _REVERSE)
        if hf_text and new.startswith("text.transformer."):
            stem, _, last = new.rpartition(".")
            new = f"{stem}.{_MS_SUFFIXES.get(last, last)}"
        if new.startswith("text.") and not custom_text:
            new = new[len("text."):]
        out[new] = value
        if new.endswith("running_var"):
            out[new[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return out


def detect_naming(keys) -> str:
    """Which naming a state dict uses: 'mindclip', 'mindformers', 'hf' or 'open_clip'."""
    keys = set(keys)
    if _is_mindclip(keys):
        return "mindclip"
    if "token_embedding.embedding_table" in keys:
        return "mindformers"
    if any(k.startswith(("text_model.", "vision_model.")) for k in keys):
        return "hf"
    if "token_embedding.weight" in keys or is_custom_text_layout(keys):
        return "open_clip"
    sample = ", ".join(sorted(keys)[:8])
    raise ValueError(f"not a CLIP checkpoint: no token embedding among its keys ({sample}, ...)")
