"""Weights by name, as open_clip, Hugging Face and MindFormers users know them: open_clip's
pretrained tags (``create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")``), ``hf-hub:``
repositories and MindFormers' names (``clip_vit_b_32``).

The first load fetches the file open_clip fetches, from the Hugging Face Hub through
``huggingface_hub`` (``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT`` for a mirror,
``HF_HUB_OFFLINE``, ``HF_TOKEN``, read when the call is made), converts and verifies it, and
installs the MindSpore weights in the weight store (``$MINDCLIP_HOME``) under
``<architecture>.<tag>``; later loads read only the store (no network, no torch). The
installation is atomic: an interrupted download or conversion leaves nothing installed.

This module sits on the front-door floor (DESIGN §1): it registers itself as a source of the
weight store, so ``models/`` resolves names without importing the Hub or the converters.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple, Union

from .models import store
from .factory import get_model_config

TAGS_FILE = os.path.join(os.path.dirname(__file__), "pretrained_tags.json")
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
OPENCLIP_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's default name on the Hub
OPENCLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"
OPENCLIP_CONFIG = "open_clip_config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a transformers repository's

# MindFormers' names (and OpenAI's) for OpenAI's released weights.
MINDFORMERS_NAMES: Dict[str, Tuple[str, str]] = {
    "clip_vit_b_32": ("ViT-B-32-quickgelu", "openai"),
    "clip_vit_b_16": ("ViT-B-16-quickgelu", "openai"),
    "clip_vit_l_14": ("ViT-L-14-quickgelu", "openai"),
    "clip_vit_l_14@336": ("ViT-L-14-336-quickgelu", "openai"),
}


class WeightsUnavailable(ConnectionError):
    """Named weights that are neither in the weight store nor fetchable now."""


@functools.lru_cache(maxsize=None)
def _table() -> Dict[str, Dict[str, Dict[str, Any]]]:
    with open(TAGS_FILE, encoding="utf-8") as f:
        return json.load(f)["tags"]


def list_pretrained(as_str: bool = False) -> List[Union[Tuple[str, str], str]]:
    """Every ``(architecture, tag)`` of open_clip's zoo whose towers mindclip builds
    (``"arch:tag"`` strings with ``as_str``), as open_clip's ``list_pretrained``."""
    from .factory import list_models

    ours = set(list_models())
    pairs = [(name, tag) for name, tags in sorted(_table().items()) if name in ours
             for tag in sorted(tags)]
    return [f"{n}:{t}" for n, t in pairs] if as_str else pairs


def pretrained_cfg(model_name: str, tag: str) -> Optional[Dict[str, Any]]:
    """What open_clip serves for ``(model_name, tag)``: the Hub file and the preprocessing
    (mean, std, interpolation, resize_mode); None for an unknown pair."""
    return _table().get(model_name, {}).get(tag)


def store_name(model_name: str, tag: str) -> str:
    """The weight-store name of a tag's converted weights."""
    return f"{model_name}.{tag}"


def _hub_cache_dir() -> Optional[str]:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_options() -> Dict[str, Any]:
    """The cache, offline flag and mirror of every Hub call, read at call time:
    huggingface_hub reads these variables once, when it is first imported."""
    return {"cache_dir": _hub_cache_dir(), "local_files_only": _offline(),
            "endpoint": os.environ.get("HF_ENDPOINT") or None}


def _safe_alternatives(filename: str) -> List[str]:
    """open_clip's order: the safetensors twin of a pickle first (no torch needed to read it)."""
    names = []
    if filename == OPENCLIP_WEIGHTS:
        names.append(OPENCLIP_SAFE_WEIGHTS)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return names + [filename]


def _unavailable(what: str, repo_id: str, files: List[str], error: Exception,
                 install_name: str, model: Optional[str]) -> WeightsUnavailable:
    why = ("HF_HUB_OFFLINE is set and the Hugging Face cache does not hold it" if _offline()
           else f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
    command = store.install_command(install_name, model)
    return WeightsUnavailable(
        f"{what} is not in the weight store ({store.store_root()}) and could not be fetched "
        f"from the Hugging Face Hub ({repo_id}: {' or '.join(files)}; {why}). Either reach "
        f"the Hub (network, or a mirror in HF_ENDPOINT, e.g. HF_ENDPOINT=https://hf-mirror.com; "
        f"unset HF_HUB_OFFLINE) or convert a local copy once: {command}")


def _download(repo_id: str, filenames: List[str], what: str, install_name: str,
              model: Optional[str]) -> str:
    """The first of ``filenames`` the repository has, from the HF cache or the Hub."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError("fetching weights by name needs huggingface_hub "
                          "(pip install huggingface_hub)") from None
    last: Exception = FileNotFoundError(repo_id)
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, **_hub_options())
        except Exception as exc:  # missing file, offline, network: try the next name
            last = exc
    raise _unavailable(what, repo_id, filenames, last, install_name, model)


def _install(name: str, source_path: str, model_name: Optional[str],
             preprocess: Dict[str, Any]) -> str:
    """Convert the checkpoint at ``source_path`` (a weight file, or an open_clip folder whose
    config and preprocessing it carries) and install it under ``name``: written into a
    temporary folder of the store, verified, then renamed into place."""
    from .convert.cli import find_converter
    from .convert.converter import save_converted
    from .convert.sources import read_source
    from .families.base import family_for_config

    source = read_source(source_path)
    preprocess = {**(source.preprocess or {}), **preprocess}
    converter = find_converter(source)
    tensors, config = converter.convert(source, model_name=model_name)
    # a Hugging Face tokenizer travels with the weights, so the store alone serves the model:
    # the source folder's own, else the one the architecture names
    assets = converter.assets(source) if hasattr(converter, "assets") else None
    tokenizer_name = getattr(getattr(config, "text_cfg", None), "hf_tokenizer_name", None)
    if assets is None and tokenizer_name:
        assets = fetch_tokenizer_files(tokenizer_name)
    final = store.store_path(name)
    os.makedirs(store.store_root(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=store.store_root())
    try:
        save_converted(tensors, config, tmp, source=f"hub:{name}",
                       family=family_for_config(config).name, preprocess=preprocess, assets=assets)
        if os.path.isdir(final):  # a damaged earlier install
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def fetch_tag(model_name: str, tag: str, alias: Optional[str] = None) -> str:
    """The store folder of open_clip's ``(model_name, tag)``, fetched and installed if needed
    (``alias``: the name the user gave, e.g. MindFormers' ``clip_vit_b_32``, for messages)."""
    entry = pretrained_cfg(model_name, tag)
    if entry is None:
        known = sorted(_table().get(model_name, {}))
        raise ValueError(f"{model_name!r} has no pretrained tag {tag!r}"
                         + (f"; its tags: {known}" if known else "; it has no open_clip tags"))
    arch = model_name
    if entry.get("quick_gelu") and not model_name.endswith("-quickgelu"):
        # open_clip only warns; the weights were trained with QuickGELU, so that is what runs
        arch = f"{model_name}-quickgelu"
    name = store_name(model_name, tag)
    folder = store.installed(name)
    if folder is not None:
        return folder
    get_model_config(arch)  # an architecture we cannot build fails before any download
    repo_id, filename = os.path.split(entry["hf_hub"])  # open_clip's "org/repo/[file]"
    what = f"{alias} ({model_name} pretrained={tag!r})" if alias else f"{model_name} pretrained={tag!r}"
    weights = _download(repo_id, _safe_alternatives(filename or OPENCLIP_WEIGHTS), what,
                        alias or name, arch)
    from .convert.sources import preprocess_fields

    return _install(name, weights, arch, preprocess_fields(entry))


def fetch_hf_hub(repo_id: str) -> str:
    """The store folder of a Hub repository: open_clip's (``open_clip_config.json`` + weights)
    or, when it has none, a Hugging Face model's (``config.json`` + ``model.safetensors``, with
    its tokenizer files: ``google/siglip-base-patch16-224``, a ``CLIPModel``)."""
    name = "hf-hub--" + repo_id.replace("/", "--")
    folder = store.installed(name)
    if folder is not None:
        return folder
    what = f"{HF_HUB_PREFIX}{repo_id}"
    try:
        config = _download(repo_id, [OPENCLIP_CONFIG], what, name, None)
        _download(repo_id, _safe_alternatives(OPENCLIP_WEIGHTS), what, name, None)
    except WeightsUnavailable as open_clip_error:
        try:
            config = _download(repo_id, ["config.json"], what, name, None)
        except WeightsUnavailable:
            raise open_clip_error from None
        _download(repo_id, list(HF_WEIGHTS), what, name, None)
        fetch_tokenizer_files(repo_id)  # into the same snapshot: the converter takes them along
    return _install(name, os.path.dirname(config), None, {})  # the snapshot folder


def fetch_tokenizer_files(repo_id: str) -> Optional[str]:
    """The snapshot folder of a Hugging Face tokenizer's files (cache, else Hub), or None
    when neither has them."""
    from .tokenizer.hf import TOKENIZER_FILES, is_tokenizer_folder

    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, allow_patterns=list(TOKENIZER_FILES),
                                   **_hub_options())
    except Exception:  # offline and uncached, no network, no such repository
        return None
    return folder if is_tokenizer_folder(folder) else None


def fetch_hf_config(name: str) -> Optional[dict]:
    """A Hugging Face model's ``config.json``: from a folder of that name, else the cache or
    the Hub; None when none has it."""
    path = os.path.join(os.path.expanduser(name), "config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(name, "config.json", **_hub_options())
        except Exception:  # offline and uncached, no network, no such repository
            return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def convert_local_dir(path: str) -> str:
    """The store folder of an open_clip ``local-dir:`` folder, converted once per version of
    its files (keyed by path, size and modification time)."""
    import hashlib

    from .convert.sources import OPENCLIP_DIR_CONFIG, OPENCLIP_DIR_WEIGHTS

    path = os.path.abspath(os.path.expanduser(path))
    config = os.path.join(path, OPENCLIP_DIR_CONFIG)
    weights = next((os.path.join(path, f) for f in OPENCLIP_DIR_WEIGHTS
                    if os.path.isfile(os.path.join(path, f))), None)
    if not os.path.isfile(config) or weights is None:
        raise FileNotFoundError(f"{LOCAL_DIR_PREFIX}{path} is not an open_clip folder "
                                f"({OPENCLIP_DIR_CONFIG} + {' or '.join(OPENCLIP_DIR_WEIGHTS)})")
    stamp = [(f, os.path.getsize(f), os.path.getmtime(f)) for f in (config, weights)]
    name = "local-dir--" + hashlib.sha1(repr(stamp).encode()).hexdigest()[:16]
    return store.installed(name) or _install(name, path, None, {})


def resolve(model_name: Optional[str], pretrained: Any) -> Optional[str]:
    """The weight-store source this module registers: a store folder for a name the Hub
    serves, None for names it does not know."""
    if model_name and model_name.startswith(HF_HUB_PREFIX):
        return fetch_hf_hub(model_name[len(HF_HUB_PREFIX):])
    if model_name and model_name.startswith(LOCAL_DIR_PREFIX):
        return convert_local_dir(model_name[len(LOCAL_DIR_PREFIX):])
    if pretrained is True and model_name in MINDFORMERS_NAMES:
        return fetch_tag(*MINDFORMERS_NAMES[model_name], alias=model_name)
    if isinstance(pretrained, str):
        if pretrained in MINDFORMERS_NAMES:
            return fetch_tag(*MINDFORMERS_NAMES[pretrained], alias=pretrained)
        if model_name and pretrained_cfg(model_name, pretrained) is not None:
            return fetch_tag(model_name, pretrained)
    return None


store.WEIGHT_SOURCES.register(resolve)
store.TOKENIZER_SOURCES.register(fetch_tokenizer_files)
store.CONFIG_SOURCES.register(fetch_hf_config)
