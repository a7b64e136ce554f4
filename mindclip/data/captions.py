"""Readers of caption datasets stored as files + annotations: Flickr8k, JSON list, CSV/TSV
(Flickr30k splits, open_clip's CSV), COCO captions and YFCC-style JSON lines."""
from __future__ import annotations

import csv
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional

from ..registry import register
from .base import ImageTextSource, json_lines, require_path
from .indexed import IndexedImageTextSource, JsonLines

FLICKR8K_LAYOUT = ("ROOT/Flickr8k_Dataset/**/*.jpg (or ROOT/Flicker8k_Dataset), "
                   "ROOT/Flickr8k_text/Flickr8k.token.txt ('name.jpg#k<TAB>caption'), "
                   "ROOT/Flickr8k_text/Flickr_8k.{train,dev,test}Images.txt")
_FLICKR8K_SPLITS = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                    "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def _group(pairs) -> "OrderedDict[str, List[str]]":
    grouped: "OrderedDict[str, List[str]]" = OrderedDict()
    for image, caption in pairs:
        caption = caption.strip()
        if caption:
            grouped.setdefault(image, []).append(caption)
    return grouped


def _source(grouped: Dict[str, List[str]], root: str, name: str,
            invalid: Optional[List[str]] = None) -> ImageTextSource:
    images = [p if os.path.isabs(p) else os.path.join(root, p) for p in grouped]
    return ImageTextSource(images, list(grouped.values()), name, invalid or [])


@register("dataset", "flickr8k")
def read_flickr8k(path: str, split: str = "train", **_) -> ImageTextSource:
    """Flickr8k from its original archive layout (see ``FLICKR8K_LAYOUT``)."""
    require_path(path, "Flickr8k root", FLICKR8K_LAYOUT)
    text_dir = os.path.join(path, "Flickr8k_text")
    token_file = require_path(os.path.join(text_dir, "Flickr8k.token.txt"),
                              "Flickr8k caption file", FLICKR8K_LAYOUT)
    if split not in _FLICKR8K_SPLITS:
        raise ValueError(f"Flickr8k split must be one of {sorted(_FLICKR8K_SPLITS)}, got {split!r}")
    split_file = require_path(os.path.join(text_dir, _FLICKR8K_SPLITS[split]),
                              f"Flickr8k {split} list", FLICKR8K_LAYOUT)
    image_dir = next((os.path.join(path, d) for d in ("Flickr8k_Dataset", "Flicker8k_Dataset")
                      if os.path.isdir(os.path.join(path, d))), None)
    require_path(image_dir, "Flickr8k image folder", FLICKR8K_LAYOUT)
    # Images sit either directly in the folder or one level down (the zip's own folder).
    nested = os.path.join(image_dir, "Flicker8k_Dataset")
    if os.path.isdir(nested):
        image_dir = nested
    with open(split_file, encoding="utf-8") as f:
        wanted = [line.strip() for line in f if line.strip()]
    pairs = []
    with open(token_file, encoding="utf-8") as f:
        for line in f:
            if "\t" not in line:
                continue
            key, caption = line.rstrip("\n").split("\t", 1)
            pairs.append((key.split("#")[0], caption))
    grouped = _group(pairs)
    missing = [w for w in wanted if w not in grouped]
    if missing:
        raise ValueError(f"{len(missing)} images of the {split} list have no caption in "
                         f"{token_file}, e.g. {missing[:3]}")
    return _source(OrderedDict((w, grouped[w]) for w in wanted), image_dir, f"flickr8k-{split}")


@register("dataset", "json")
def read_json_list(path: str, image_root: Optional[str] = None, **_) -> ImageTextSource:
    """``[{"image": path, "caption": str | [str, ...]}, ...]`` (en_train.json / en_val.json)."""
    layout = '[{"image": "relative/or/absolute.jpg", "caption": ["c1", "c2", ...]}, ...]'
    require_path(path, "JSON caption list", layout)
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list like {layout}")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "image" not in item or "caption" not in item:
            raise ValueError(f"{path}: entry {i} lacks 'image'/'caption'; expected {layout}")
        caps = item["caption"] if isinstance(item["caption"], list) else [item["caption"]]
        pairs += [(item["image"], c) for c in caps]
    return _source(_group(pairs), image_root or os.path.dirname(os.path.abspath(path)),
                   os.path.basename(path))


@register("dataset", "csv")
def read_csv(path: str, csv_img_key: str = "filepath", csv_caption_key: str = "title",
             csv_separator: str = "\t", image_root: Optional[str] = None, **_) -> ImageTextSource:
    """CSV/TSV with an image column and a caption column (open_clip's ``--csv-*`` options).
    Rows of the same image are grouped into one sample with several captions."""
    require_path(path, "caption CSV", f"a header row with columns {csv_img_key!r} and "
                                      f"{csv_caption_key!r}, separated by {csv_separator!r}")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=csv_separator)
        columns = reader.fieldnames or []
        for key in (csv_img_key, csv_caption_key):
            if key not in columns:
                raise ValueError(f"{path}: no column {key!r}; columns are {columns} "
                                 f"(separator {csv_separator!r})")
        pairs = [(row[csv_img_key], row[csv_caption_key]) for row in reader]
    return _source(_group(pairs), image_root or os.path.dirname(os.path.abspath(path)),
                   os.path.basename(path))


@register("dataset", "jsonl")
def read_jsonl_columns(path: str, csv_img_key: str = "image_path", csv_caption_key: str = "caption",
                       image_root: Optional[str] = None, **_) -> ImageTextSource:
    """JSON lines with an image column and a caption column: Hugging Face run_clip.py's
    ``--train_file`` (columns ``image_path`` / ``caption``, its defaults; other names through
    the same ``csv_img_key`` / ``csv_caption_key`` keys as CSV). Rows of one image are grouped."""
    layout = f'{{"{csv_img_key}": "x.jpg", "{csv_caption_key}": "..."}} per line'
    require_path(path, "JSON-lines caption file", layout)
    pairs, invalid = json_lines(path, layout, lambda item: (item[csv_img_key], item[csv_caption_key]))
    return _source(_group(pairs), image_root or os.path.dirname(os.path.abspath(path)),
                   os.path.basename(path), invalid)


@register("dataset", "coco")
def read_coco(path: str, image_root: Optional[str] = None, split: str = "train", **_) -> ImageTextSource:
    """COCO captions: ``path`` is the annotation JSON, or the COCO root holding
    ``annotations/captions_{split}2017.json`` and ``{split}2017/``."""
    layout = "ROOT/annotations/captions_train2017.json + ROOT/train2017/*.jpg"
    if os.path.isdir(path):
        root = path
        path = os.path.join(root, "annotations", f"captions_{split}2017.json")
        image_root = image_root or os.path.join(root, f"{split}2017")
    require_path(path, "COCO caption annotations", layout)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO captions file (needs 'images' and 'annotations')")
    files = {img["id"]: img["file_name"] for img in data["images"]}
    pairs = [(files[a["image_id"]], a["caption"]) for a in data["annotations"]]
    grouped = _group(pairs)
    root = image_root or os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return _source(grouped, root, os.path.basename(path))


@register("dataset", "yfcc")
def read_json_lines(path: str, image_root: Optional[str] = None, **_) -> ImageTextSource:
    """DeCLIP's YFCC15M meta files: one ``{"filename": ..., "caption": str or list}`` per line,
    ``filename`` relative to ``image_root`` (default: the file's folder). Lines are indexed
    once and read on demand (see :mod:`mindclip.data.indexed`); a sample with an empty
    caption is skipped and counted."""
    layout = '{"filename": "path/to/image.jpg", "caption": "..."} per line'
    require_path(path, "YFCC15M JSON-lines meta file", layout)
    rows = JsonLines(path)
    if len(rows):
        first = rows[0]
        if not isinstance(first, dict) or "filename" not in first:
            raise ValueError(f"{path}:1: expected {layout}")
    return IndexedImageTextSource(rows, "filename", "caption",
                                  image_root or os.path.dirname(os.path.abspath(path)),
                                  os.path.basename(path))
