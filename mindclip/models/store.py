"""The local weight store: converted weights installed under a name (``$MINDCLIP_HOME/<name>/``,
default ``~/.cache/mindclip``), so that every front door taking a model name — MindFormers'
``clip_vit_b_32``, an open_clip tag, an architecture name — loads real weights. A name the store
does not hold is asked of the registered sources (the Hugging Face Hub, :mod:`mindclip.hub`);
one that no source serves is an error that prints the conversion command that installs it.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional

ENV_VAR = "MINDCLIP_HOME"
WEIGHT_FILES = ("mindclip_model.safetensors", "mindclip_model.ckpt")

# OpenAI's release file of each architecture that has one (what MindFormers converted).
OPENAI_FILES = {"ViT-B-32-quickgelu": "ViT-B-32.pt", "ViT-B-16-quickgelu": "ViT-B-16.pt",
                "ViT-L-14-quickgelu": "ViT-L-14.pt", "ViT-L-14-336-quickgelu": "ViT-L-14-336px.pt",
                "RN50-quickgelu": "RN50.pt", "RN101-quickgelu": "RN101.pt",
                "RN50x4-quickgelu": "RN50x4.pt"}


class Sources:
    """Where what the store does not hold may come from: callables tried in registration order,
    the first answer that is not None wins. The front-door floor (:mod:`mindclip.hub`)
    registers them; the model layer must not import the Hub itself."""

    def __init__(self) -> None:
        self._sources: List[Callable[..., Any]] = []

    def register(self, source: Callable[..., Any]) -> None:
        if source not in self._sources:
            self._sources.append(source)

    def first(self, *args: Any) -> Any:
        for source in self._sources:
            found = source(*args)
            if found:
                return found
        return None


# (model_name, pretrained) -> store folder | None: weights by name (open_clip tags, hf-hub:, ...)
WEIGHT_SOURCES = Sources()
# Hugging Face tokenizer name -> folder with its files | None
TOKENIZER_SOURCES = Sources()
# Hugging Face model name -> its config.json as a dict | None
CONFIG_SOURCES = Sources()


def fetch(model_name: Optional[str], pretrained: Any) -> Optional[str]:
    """The store folder a registered source installs for ``(model_name, pretrained)``, or
    None when no source serves that name."""
    return WEIGHT_SOURCES.first(model_name, pretrained)


def fetch_tokenizer(name: str) -> Optional[str]:
    """A folder with the files of the Hugging Face tokenizer ``name`` (``bert-base-uncased``)
    from a registered source (the Hugging Face cache or Hub), or None."""
    return TOKENIZER_SOURCES.first(name)


def fetch_hf_config(name: str) -> dict:
    """The ``config.json`` of the Hugging Face model ``name`` (a folder, or a repository in
    the Hugging Face cache or on the Hub) from a registered source; an error when none has it."""
    config = CONFIG_SOURCES.first(name)
    if config:
        return config
    raise FileNotFoundError(
        f"the architecture of the Hugging Face text model {name!r} (its config.json) is not "
        "recorded in this model's config and was found neither in a folder of that name nor "
        "in the Hugging Face cache (HF_HOME) or Hub; load the model from pretrained weights "
        "(they record it), or give text_cfg.hf_model_config")


class WeightsNotInstalled(FileNotFoundError):
    """A model name whose converted weights are not in the store."""


def store_root() -> str:
    """``$MINDCLIP_HOME``, or ``~/.cache/mindclip``."""
    return os.path.abspath(os.path.expanduser(os.environ.get(ENV_VAR) or "~/.cache/mindclip"))


def store_path(name: str) -> str:
    """The folder a name's weights are installed in (whether or not they are)."""
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"not a model name for the weight store: {name!r}")
    return os.path.join(store_root(), name)


def installed(name: str, canonical: Optional[str] = None) -> Optional[str]:
    """The installed folder of ``name`` (or of its canonical architecture name), or None."""
    for candidate in dict.fromkeys(n for n in (name, canonical) if n):
        folder = store_path(candidate)
        if any(os.path.isfile(os.path.join(folder, f)) for f in WEIGHT_FILES):
            return folder
    return None


def store_entry(path: str) -> Optional[str]:
    """The store folder holding ``path`` (a weight file or folder), or None outside the store."""
    root = store_root()
    path = os.path.abspath(path)
    if os.path.dirname(path) == root and os.path.isdir(path):
        return path
    parent = os.path.dirname(path)
    return parent if os.path.dirname(parent) == root else None


def install_command(name: str, canonical: Optional[str] = None) -> str:
    """The command that converts a PyTorch checkpoint into the store under ``name``."""
    openai_file = OPENAI_FILES.get(canonical or name)
    if openai_file:
        return (f"python tools/convert_weight.py --torch_path {openai_file} --allow_torchscript "
                f"--install {name}")
    model = f" --model {canonical}" if canonical else ""
    return (f"python tools/convert_weight.py --torch_path <PyTorch checkpoint or Hugging Face "
            f"folder>{model} --install {name}")


def require_installed(name: str, canonical: Optional[str] = None) -> str:
    """The installed folder of ``name``; otherwise an error with the install command."""
    folder = installed(name, canonical)
    if folder is None:
        raise WeightsNotInstalled(
            f"no weights installed for {name!r} in {store_root()} (${ENV_VAR}), and it is not a "
            f"name the Hub serves (an open_clip pretrained tag, hf-hub:, a MindFormers name). "
            f"mindclip never runs a named model with random weights; convert a checkpoint into "
            f"the store once:\n  {install_command(name, canonical)}")
    return folder
