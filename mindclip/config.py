"""Run configuration: YAML files with ``base_config`` inheritance, command-line overrides and
strict key checking against one schema (the defaults below).

A key that the schema does not know is an error naming the valid keys of that section, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Iterable, List, Optional, Union

import yaml

_DATASET = {
    "type": None,            # registered dataset name (see mindclip.registry.names("dataset"))
    "path": None,            # dataset root, annotation file or shard pattern
    "image_root": None,      # folder the annotation's image paths are relative to
    "split": "train",
    "csv_img_key": None,      # image / caption columns (csv: filepath / title; jsonl:
    "csv_caption_key": None,  # image_path / caption, run_clip.py's) when null
    "csv_separator": "\t",
    "train_num_samples": None,
    "resampled": False,
    "class_names": None,     # list, or a .txt/.yaml file, for classification datasets
    "templates": None,       # list of prompt templates with one "{}"
    "num_samples": None,     # use only the first N samples (quick runs)
    "unique_per_class": False,  # digits_captions: one image per class
    "num_workers": 2,
    "shuffle": True,
    # evaluation: resize the shortest side to this, then center-crop the model's size
    # (DeCLIP's ImageNet protocol: 256 then 224); null = the model's size (open_clip's)
    "resize_size": None,
    # random_crop false: shortest-side resize + center crop (run_clip.py's train transform)
    "augment": {"scale": [0.9, 1.0], "color_jitter": 0.0, "grayscale": 0.0, "random_crop": True,
                "hue": 0.0, "color_jitter_prob": 1.0, "blur_prob": 0.0, "blur_sigma": [0.1, 2.0],
                "hflip": 0.0},
    # DeCLIP's text view: eda (synonym replacement / swap / deletion) | swap_delete
    "caption_augment": "eda",
    # records (caption-file lines, shards) that fail to read and, in training, images that
    # fail to decode are skipped, counted and named; beyond this fraction the run stops instead
    "max_skip_fraction": 0.05,
}

DEFAULTS: Dict[str, Any] = {
    "base_config": None,
    "task": "contrastive_language_image_pretrain",
    "run_mode": "train",
    "seed": 0,
    "output_dir": "./output",
    "load_checkpoint": None,
    "resume": False,
    "custom_imports": [],    # modules imported first: they may register families, datasets...
    # family: null = the architecture's (or checkpoint's) own; needed with an inline config
    "model": {"name": "ViT-Tiny-8", "pretrained": None, "config": None, "family": None},
    "train_dataset": copy.deepcopy(_DATASET),
    "eval_dataset": dict(copy.deepcopy(_DATASET), split="test", shuffle=False),
    "predict_data": None,
    # type: the contrastive loss (clip | siglip), null = the family's own (CLIP: clip, SigLIP:
    # siglip); weights: per-term
    # weights of a multi-term objective; clamp_logit_scale: null = the family's rule,
    # false = none, [low, high]
    # DeCLIP: weights {clip, simsiam, mlm, nn} (default 0.4/0.2/0.2/0.2), the nearest-neighbour
    # memory size, MLM masking probability and per-caption position budget (null: automatic)
    "loss": {"type": None, "local_loss": False, "gather_with_grad": True, "weights": {},
             "clamp_logit_scale": None, "memory_size": 65536, "mlm_probability": 0.15,
             "mlm_max_positions": None},
    "optimizer": {"type": "adamw", "lr": 5e-4, "weight_decay": 0.2, "beta1": 0.9,
                  "beta2": 0.98, "eps": 1e-6},
    # warmup goes linearly from warmup_start_lr to optimizer.lr
    "lr_schedule": {"type": "cosine", "warmup_steps": 0, "min_lr": 0.0, "warmup_start_lr": 0.0},
    "runner": {
        "epochs": 1, "max_steps": None, "batch_size": 32, "accumulate_steps": 1,
        # precision: fp32 | fp16 | bf16, or by backend ({Ascend: bf16, CPU: fp32}).
        # loss_scale (fp16): dynamic (init, x/÷ factor, grow after window clean steps) or a number
        "clip_grad_norm": None, "precision": "fp32", "loss_scale": "dynamic",
        "loss_scale_init": 65536.0, "loss_scale_factor": 2.0, "loss_scale_window": 2000,
        "lock_image": False, "lock_image_unlocked_groups": 0,
        "lock_text": False, "lock_text_unlocked_layers": 0,
        # FLIP's patch dropout for this run (open_clip's --force-patch-dropout): the fraction
        # of patch tokens each training image drops; null = the architecture's patch_dropout
        "force_patch_dropout": None,
        # open_clip's --grad-checkpointing: recompute each residual block in the backward pass
        "grad_checkpointing": False,
        "log_interval": 10, "save_interval": 0, "keep_checkpoints": 3,
        "eval_interval": 1, "progress_bar": True,
    },
    # generation: model.generate's keywords for models that write text (CoCa), used by the
    # captioning metrics and --run_mode predict (open_clip's defaults: beam search, 6 beams)
    "eval": {"batch_size": 64, "top_k": [1, 5], "plots": True, "generation": {},
             # an image-caption set evaluated for retrieval besides eval_dataset
             "retrieval_dataset": dict(copy.deepcopy(_DATASET), split="test", shuffle=False)},
    # --run_mode eval over a benchmark suite (configs/eval/): file = a packaged suite name
    # (openclip) or a YAML file with a datasets list; datasets = the entries to run
    # ("wds/cifar10,wds/vtab/pets"); dataset_root = local copies ("/data/wds_{dataset_cleaned}"),
    # null = fetched from the Hugging Face Hub; language: en | ar | cn | it | jp
    # task: auto (each dataset's) | zeroshot_classification | zeroshot_retrieval | linear_probe
    # (CLIP_benchmark's; linear_probe: fewshot_k, lr, epochs, batch_size, seed, val_proportion)
    "suite": {"file": None, "datasets": None, "dataset_root": None, "split": "test", "language": "en",
              "task": "auto", "linear_probe": {}, "num_workers": 2, "max_skip_fraction": 0.05,
              "progress_bar": True},
    "predict": {"top_k": 5},
    # memory: MindSpore's memory pool (mindspore.runtime.set_memory's init_size, increase_size,
    # max_size as "2GB", "0.25GB"; null = MindSpore's default, 2 GB blocks). init_size "auto":
    # on CPU a first block of 3/4 of the machine's memory, address space until used, so that a
    # step's later calls land where its first did (mindclip/memory_pool.py).
    "context": {"mode": 0, "device_target": "CPU", "device_id": 0, "threads": None,
                "memory": {"init_size": "auto", "increase_size": None, "max_size": None}},
    "parallel": {"data_parallel": "auto"},
}

# Sections whose values are free-form (validated by their consumer).
_FREE = {("model", "config"), ("loss", "weights"), ("runner", "precision"), ("eval", "generation"),
         ("suite", "linear_probe")}


class ConfigError(ValueError):
    pass


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(cfg: Dict[str, Any], schema: Dict[str, Any] = DEFAULTS, path: tuple = ()) -> None:
    """Raise :class:`ConfigError` on any key the schema does not define."""
    for key, value in cfg.items():
        where = ".".join(path + (key,))
        if key not in schema:
            section = ".".join(path) or "top level"
            raise ConfigError(f"unknown config key {where!r}; valid keys at {section}: "
                              f"{sorted(schema)}")
        if (path + (key,)) in _FREE:
            continue
        if isinstance(schema[key], dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where!r} must be a mapping, got {value!r}")
            validate(value, schema[key], path + (key,))


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping at top level")
    return data


def _load_with_bases(path: str, seen: Iterable[str] = ()) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"base_config cycle through {path}")
    data = _read_yaml(path)
    bases = data.pop("base_config", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = deep_merge(merged, _load_with_bases(base_path, tuple(seen) + (path,)))
    return deep_merge(merged, data)


def parse_value(text: str) -> Any:
    """Command-line value -> Python (YAML scalar rules: 1e-4, true, null, [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Set dotted keys (``optimizer.lr``) in a copy of ``cfg``; unknown keys are errors."""
    out = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        validate(_nest(keys, value))
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return out


def _nest(keys: List[str], value: Any) -> Dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
                base: Union[Dict[str, Any], None] = None) -> Dict[str, Any]:
    """Defaults <- ``base`` dict <- YAML file (with its bases) <- dotted ``overrides``."""
    cfg = copy.deepcopy(DEFAULTS)
    if base:
        validate(base)
        cfg = deep_merge(cfg, base)
    if path:
        data = _load_with_bases(path)
        validate(data)
        cfg = deep_merge(cfg, data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg.pop("base_config", None)
    return cfg


def dump_config(cfg: Dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
