"""Architectures (JSON files + aliases), ``create_model`` and weight loading, for every family.

An architecture file names its family (``"family": "declip"``; CLIP when absent); converted
files and training checkpoints record family and architecture, so a checkpoint alone says
which model to build. The family itself comes from the registry, so nothing here knows a
family by name.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .families.base import Family, family_of, family_of_architecture, get_family
from .models import pretrained as _pretrained
from .models.exceptions import MissingTowerError
from .models.reparam import is_reparameterized, reparameterize_model
from .models.rng import weight_parameters
from .models.store import WEIGHT_FILES, fetch, installed, require_installed, store_entry
from .models.weights_io import (FAMILY_KEY, METADATA_KEY, TRAIN_STATE_KEY, CorruptCheckpointError,
                                read_weight_metadata, read_weights)
from .tokenizer.hf import HFTokenizer, is_tokenizer_folder

PREPROCESS_KEY = "preprocess_cfg"
DEFAULT_FAMILY = "clip"  # files written before families were recorded are CLIP checkpoints

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "models", "model_configs")

# MindFormers' and OpenAI's names for the same architectures. Both mean OpenAI-trained
# weights, hence the QuickGELU variants.
MODEL_ALIASES: Dict[str, str] = {
    "clip_vit_b_32": "ViT-B-32-quickgelu",
    "clip_vit_b_16": "ViT-B-16-quickgelu",
    "clip_vit_l_14": "ViT-L-14-quickgelu",
    "clip_vit_l_14@336": "ViT-L-14-336-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

DEFAULT_TEXT_MODEL = "ViT-B-32"

CONVERT_HINT = ("Name the weights (an open_clip tag, hf-hub:org/repo) or convert a PyTorch checkpoint, e.g.\n"
                "  python tools/convert_weight.py --torch_path ViT-B-32.pt --allow_torchscript "
                "--mindspore_path clip_vit_b_32.safetensors\n"
                "and pass the written file (or its directory) as `pretrained`, or install it "
                "under a name with --install NAME.")


@functools.lru_cache(maxsize=None)
def _config_files() -> Dict[str, str]:
    # open_clip's own JSON files, unchanged, plus ours; those of towers we do not build yet
    # stay, so their names say what is missing instead of "unknown model"
    return {os.path.splitext(os.path.basename(p))[0]: p
            for p in glob.glob(os.path.join(CONFIG_DIR, "*.json"))}


@functools.lru_cache(maxsize=None)
def _buildable() -> Tuple[str, ...]:
    names = []
    for name in sorted(_config_files()):
        try:
            get_model_config(name)
        except MissingTowerError:
            continue
        names.append(name)
    return tuple(names)


def list_models(include_aliases: bool = False) -> List[str]:
    """Names of the built-in architectures (``ViT-B-32``, ``ViT-H-14-CLIPA``, ...): open_clip's
    model configs whose towers mindclip builds, and mindclip's own."""
    names = list(_buildable())
    return names + sorted(MODEL_ALIASES) if include_aliases else names


def resolve_model_name(name: str) -> str:
    """Canonical architecture name for ``name`` or an alias of it."""
    name = MODEL_ALIASES.get(name, name)
    if name not in _config_files():
        raise ValueError(f"unknown model {name!r}; available: {list_models(include_aliases=True)}")
    return name


def _read_architecture(name: str) -> Tuple[str, Dict[str, Any]]:
    with open(_config_files()[resolve_model_name(name)], "r", encoding="utf-8") as f:
        data = json.load(f)
    family = family_of_architecture(data, DEFAULT_FAMILY).name
    data.pop("family", None)
    return family, data


def model_family(name: str) -> Family:
    """The family of a built-in architecture or alias."""
    return get_family(_read_architecture(name)[0])


def get_model_config(name: str) -> Any:
    """The architecture config (the family's config class) of a built-in name or alias."""
    family_name, data = _read_architecture(name)
    try:
        return get_family(family_name).config_from_dict(data)
    except MissingTowerError as exc:
        raise MissingTowerError(f"{name}: {exc}") from None


def find_weight_file(pretrained: str) -> str:
    """Resolve ``pretrained`` (a file or a directory holding one) to a weight file path."""
    if os.path.isdir(pretrained):
        for fname in WEIGHT_FILES:
            if os.path.isfile(os.path.join(pretrained, fname)):
                return os.path.join(pretrained, fname)
        found = sorted(glob.glob(os.path.join(pretrained, "*.safetensors"))
                       + glob.glob(os.path.join(pretrained, "*.ckpt")))
        if len(found) == 1:
            return found[0]
        what = "several weight files: " + ", ".join(found) if found else "no .ckpt or .safetensors file"
        raise FileNotFoundError(f"pretrained directory {pretrained} holds {what}. {CONVERT_HINT}")
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"pretrained weights not found: {pretrained}. {CONVERT_HINT}")
    return pretrained


def architecture_metadata(family: Family, config: Any) -> Dict[str, str]:
    """What a weight file records so that it can be loaded without naming the model."""
    return {FAMILY_KEY: family.name, METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True),
            "format": "mindclip"}


def read_architecture(metadata: Dict[str, str]) -> Optional[Tuple[Family, Any]]:
    """``(family, config)`` recorded in a weight file's metadata, or None."""
    if METADATA_KEY not in metadata:
        return None
    family = get_family(metadata.get(FAMILY_KEY, DEFAULT_FAMILY))
    return family, family.config_from_dict(json.loads(metadata[METADATA_KEY]))


def read_checkpoint_config(path: str) -> Optional[Tuple[Family, Any]]:
    """The ``(family, architecture)`` recorded in a converted checkpoint, or None."""
    return read_architecture(read_weight_metadata(find_weight_file(path)))


def check_state_dict(expected: Dict[str, tuple], tensors: Dict[str, np.ndarray], source: str) -> None:
    """Raise with every missing, unexpected and mis-shaped weight named."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k])}"
                 for k in sorted(set(expected) & set(tensors))
                 if tuple(tensors[k].shape) != tuple(expected[k])]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {source} does not fit the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        if misshaped:
            lines.append(f"  wrong shape ({len(misshaped)}): " + "; ".join(misshaped))
        raise ValueError("\n".join(lines))


def load_pretrained(model: Any, pretrained: str) -> Any:
    """Load a converted checkpoint (or the model part of a training checkpoint) into
    ``model``, refusing anything that does not fit exactly.

    The family and architecture recorded in the file (if any) must equal the model's, so that
    e.g. QuickGELU weights are never run with exact GELU. Checkpoints in a layout the model's
    family reads directly (its converters' ``adapt``, e.g. MindFormers 1.x CLIP names) are
    renamed on the way in.
    """
    import mindspore as ms

    from .models.diff import config_differences

    family = family_of(model)
    path = find_weight_file(pretrained)
    tensors, metadata = read_weights(path)
    saved = read_architecture(metadata)
    if saved is not None:
        saved_family, saved_config = saved
        if saved_family.name != family.name:
            raise ValueError(f"checkpoint {path} holds a {saved_family.name!r} model, not a "
                             f"{family.name!r} one")
        diff = config_differences(saved_config.to_dict(), model.config.to_dict())
        if diff:
            raise ValueError(f"checkpoint {path} was converted for a different architecture "
                             f"(checkpoint vs model): " + "; ".join(diff))
    params = weight_parameters(model)
    if not set(params) <= set(tensors):
        for converter in family.converters:
            adapted = converter.adapt(tensors)
            if adapted is not None:
                tensors = adapted
                break
    if TRAIN_STATE_KEY in metadata:
        # A training checkpoint also holds optimizer moments and objective state.
        tensors = {k: v for k, v in tensors.items() if k in params}
    check_state_dict({k: p.shape for k, p in params.items()}, tensors, path)
    given = set()
    for name, param in params.items():
        # The parameter takes the array read from the file as its memory, no copy when it is
        # fp32 already (a ViT-B-32 load peaked at 1.62 GiB through two copies, 1.06 without);
        # np.require keeps a 0-d array 0-d, where np.ascontiguousarray makes it 1-d. A view,
        # or an array already given (an adapter's tied names), is copied: parameters are
        # updated in place and must not share memory.
        array = np.require(tensors[name], np.float32, "C")
        if not array.flags.owndata or id(array) in given:
            array = array.copy()
        given.add(id(array))
        value = ms.Tensor.from_numpy(array)
        param.set_data(value if param.dtype == ms.float32 else value.astype(param.dtype))
    # Files saved with the weights (a tokenizer folder) are found through here.
    model.source_dir = os.path.dirname(os.path.abspath(path))
    if PREPROCESS_KEY in metadata:  # the preprocessing the weights were trained with (a tag's)
        model.set_preprocess(json.loads(metadata[PREPROCESS_KEY]))
    return model


def _has_scheme(text: str) -> bool:
    """``hf-hub:org/repo``, ``local-dir:/path``: a name whose scheme says where weights are."""
    return re.match(r"^[a-z][a-z0-9-]+:", text) is not None and not os.path.exists(text)


def _is_path(text: str) -> bool:
    if _has_scheme(text):
        return False
    return os.path.exists(text) or os.sep in text or text.endswith((".ckpt", ".safetensors"))


def resolve_pretrained(model_name: Optional[str], pretrained: Any) -> Optional[str]:
    """``pretrained`` as a file or folder: a path stays a path; ``True`` means the weights
    of ``model_name`` (installed, or fetched by a registered source: MindFormers' names); any
    other string is a name installed in the store or a tag a source fetches (open_clip's
    ``laion2b_s34b_b79k``). Never None for a name: an error says how to get the weights."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if not model_name:
            raise ValueError("pretrained=True needs a model name to look up in the weight store")
        canonical = _canonical(model_name)
        return (installed(model_name, canonical) or fetch(model_name, True)
                or require_installed(model_name, canonical))
    if _is_path(str(pretrained)):
        return str(pretrained)
    name = str(pretrained)
    return (installed(name, _canonical(name)) or fetch(model_name, name)
            or require_installed(name, _canonical(name)))


def _canonical(name: str) -> Optional[str]:
    try:
        return resolve_model_name(name)
    except ValueError:
        return None


def create_model(model_name: Optional[str] = None, pretrained: Any = None,
                 config: Any = None, family: Optional[str] = None,
                 reparameterize: Optional[bool] = None) -> Any:
    """Build a model of any family by architecture name, optionally loading converted weights.

    Args:
        model_name: a name from :func:`list_models` or an alias (``clip_vit_b_32``). May be
            omitted when ``pretrained`` records its architecture (every converted file does).
        pretrained: a ``.ckpt``/``.safetensors`` file or a directory holding one; ``True`` for
            the weights installed under ``model_name`` in the weight store
            (``$MINDCLIP_HOME``); or the name they are installed under. Without it the model
            is randomly initialised (training from scratch).
        config: an explicit architecture (config object or dict) instead of a name.
        family: the family of ``config`` (default: the name's family, the checkpoint's, or CLIP).
        reparameterize: fuse reparameterizable towers (MobileCLIP's FastViT) into their
            inference form (:func:`~mindclip.models.reparam.reparameterize_model`). Default:
            when pretrained weights are loaded, as MobileCLIP's README has users do; pass
            False to fine-tune or to save the weights again.

    The model is returned in inference mode (``set_train(False)``).
    """
    if model_name is not None and _has_scheme(model_name) and pretrained in (None, True):
        # a name that is itself a source of weights (hf-hub:org/repo, local-dir:/path)
        folder = fetch(model_name, True)
        if folder is not None:
            model_name, pretrained = None, folder
    requested = pretrained
    pretrained = resolve_pretrained(model_name, pretrained)
    fuse = pretrained is not None if reparameterize is None else reparameterize
    try:
        return _build(model_name, pretrained, config, family, fuse)
    except CorruptCheckpointError as exc:
        entry = store_entry(pretrained) if pretrained else None
        if entry is None:
            raise
        # a damaged weight-store entry: drop it and get the weights again where they came
        # from (the Hub), or say how to reinstall them
        shutil.rmtree(entry)
        warnings.warn(f"{exc}; removed {entry} from the weight store and fetching it again")
        return _build(model_name, resolve_pretrained(model_name, requested), config, family, fuse)


def _build(model_name: Optional[str], pretrained: Optional[str], config: Any,
           family: Optional[str], fuse: bool) -> Any:
    if config is not None:
        fam = get_family(family or DEFAULT_FAMILY)
        cfg = fam.config_from_dict(config)
    elif model_name is not None and (pretrained is None or _canonical(model_name) is not None):
        fam = get_family(family) if family else model_family(model_name)
        cfg = fam.config_from_dict(_read_architecture(model_name)[1])
    elif pretrained is not None:  # no name, or a name the weights are installed under
        arch = read_checkpoint_config(pretrained)
        if arch is None:
            raise ValueError(f"{pretrained} records no architecture; pass model_name")
        fam, cfg = arch
    else:
        raise ValueError("create_model needs a model_name, a config or a pretrained checkpoint")
    model = fam.build_model(cfg, initialize=pretrained is None)
    if pretrained is not None:
        load_pretrained(model, pretrained)
        # nothing may wait to be drawn at some later first run (load_pretrained refuses a
        # file missing a weight, so this finds every parameter set)
        model.init_parameters_data()
    model.set_train(False)
    return reparameterize_model(model) if fuse else model


def get_tokenizer(model: Any = None) -> Any:
    """The text processor of a model instance, an architecture name, a converted checkpoint
    (file or folder; a tokenizer saved beside the weights is used), or a Hugging Face
    tokenizer folder; CLIP's 77-token BPE when nothing is given."""
    if model is None:
        model = DEFAULT_TEXT_MODEL
    if not isinstance(model, str):
        return family_of(model).get_tokenizer(model.config, getattr(model, "source_dir", None))
    if not os.path.exists(model):
        return model_family(model).get_tokenizer(get_model_config(model), None)
    try:
        weight_file = find_weight_file(model)
    except FileNotFoundError:
        if is_tokenizer_folder(model):
            return HFTokenizer(model)
        raise
    arch = read_architecture(read_weight_metadata(weight_file))
    if arch is None:
        raise ValueError(f"{model} records no architecture, so its tokenizer is unknown")
    return arch[0].get_tokenizer(arch[1], os.path.dirname(os.path.abspath(weight_file)))


def write_pretrained(path: str, tensors: Dict[str, np.ndarray], family: Family, config: Any,
                     dtype: str = "fp32", metadata: Optional[Dict[str, str]] = None,
                     tokenizer: Any = None) -> str:
    """Write weights recording family + architecture; returns the weight file.

    ``path`` ending in ``.ckpt``/``.safetensors`` is a file (written beside: nothing);
    anything else is a model folder receiving ``mindclip_model.safetensors``,
    ``config.json`` and the text processor's files when it has a ``save(folder)`` (a
    tokenizer that is not bundled must travel with the weights, so it needs a folder).
    """
    from .models.weights_io import write_weights

    meta = {**architecture_metadata(family, config), **(metadata or {})}
    is_file = path.endswith((".ckpt", ".safetensors"))
    saves = hasattr(tokenizer, "save")
    if is_file and saves:
        raise ValueError(f"a {family.name} model's tokenizer files travel with its weights: give "
                         f"a folder, not {path}, as the output")
    if not is_file:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"family": family.name, **config.to_dict()}, f, indent=2)
        if saves:
            tokenizer.save(path)
        path = os.path.join(path, WEIGHT_FILES[0])
    write_weights(path, tensors, dtype=dtype, metadata=meta)
    return path


def _model_from_pretrained(cls: type, name_or_path: str) -> Any:
    # Hugging Face's from_pretrained gives a model to fine-tune and save_pretrained again:
    # the training form (reparameterize_model(model) makes the inference one)
    if _is_path(name_or_path):
        model = create_model(pretrained=name_or_path, reparameterize=False)
    elif _has_scheme(name_or_path):
        model = create_model(name_or_path, reparameterize=False)
    else:
        model = create_model(name_or_path, pretrained=True, reparameterize=False)
    if not isinstance(model, cls):
        raise ValueError(f"{name_or_path} holds a {type(model).__name__} "
                         f"({model.family} family), not a {cls.__name__}")
    return model


def preprocess_metadata(model: Any) -> Dict[str, str]:
    """The weight-file metadata recording a model's preprocessing record, when its weights
    came with one (a tag, an open_clip folder): saved models keep it."""
    if not getattr(model, "preprocess_cfg", None):
        return {}
    return {PREPROCESS_KEY: json.dumps(model.preprocess.to_dict(), sort_keys=True)}


def write_model(model: Any, path: str) -> str:
    """Write a model's weights with its family, architecture, preprocessing record and text
    processor (:func:`write_pretrained`); returns the weight file."""
    if is_reparameterized(model):
        raise ValueError("this model was reparameterized for inference (its branches fused into "
                         "single convolutions) and no longer has its checkpoint's parameters; "
                         "save the model as loaded with create_model(..., reparameterize=False)")
    tensors = {k: p.asnumpy() for k, p in weight_parameters(model).items()}
    return write_pretrained(path, tensors, family_of(model), model.config,
                            tokenizer=get_tokenizer(model), metadata=preprocess_metadata(model))


def _save_pretrained(model: Any, folder: str) -> str:
    write_model(model, folder)
    return folder


def _show_support_list(cls: type) -> List[str]:
    archs = [n for n in list_models() if model_family(n).model_class is cls]
    names = [a for a, arch in MODEL_ALIASES.items() if arch in archs and "/" not in a] + archs
    print(f"- support list of {cls.__name__} is:\n-    {names}\n- " + "-" * 37)
    return names


def _config_from_pretrained(cls: type, name_or_path: str) -> Any:
    if _is_path(name_or_path):
        if not (os.path.isdir(name_or_path) or os.path.isfile(name_or_path)):
            raise FileNotFoundError(f"no model folder or file at {name_or_path}")
        arch = read_checkpoint_config(name_or_path)
        if arch is None:
            raise ValueError(f"{name_or_path} records no architecture")
        config = arch[1]
    else:
        config = get_model_config(name_or_path)
    if not isinstance(config, cls):
        raise ValueError(f"{name_or_path} is a {type(config).__name__}, not a {cls.__name__}")
    return config


_pretrained.register_front_doors(
    model_from_pretrained=_model_from_pretrained, save_pretrained=_save_pretrained,
    show_support_list=_show_support_list, config_from_pretrained=_config_from_pretrained)
