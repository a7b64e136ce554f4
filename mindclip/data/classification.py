"""Labelled image datasets for zero-shot classification: CIFAR-100/10 (python pickles,
read through a restricted unpickler, and the binary version), ImageFolder trees, DeCLIP's
ImageNet meta files and scikit-learn's handwritten digits (the built-in demo data)."""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
from typing import Any, List, Optional, Tuple

import numpy as np

from ..registry import register
from .base import ImageTextSource, LabeledImageSource, json_lines, require_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
CIFAR100_LAYOUT = "ROOT/{meta,train,test} (cifar-100-python) or ROOT/{train.bin,test.bin,fine_label_names.txt}"
# The digits demo's captions, and its zero-shot prompts (evaluation.prompts uses them too).
DIGIT_TEMPLATES = ["a photo of the number {}.", "a picture of the digit {}.",
                   "a handwritten {}.", "the number {}, handwritten.", "a blurry image of a {}."]
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings, bytes, numbers and numpy arrays; nothing else.

    CIFAR's python version is a pickle, and a pickle can name any callable to run while
    loading; only the few numpy reconstruction functions an array needs are allowed.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "set"), ("builtins", "frozenset"),
        ("collections", "OrderedDict"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only plain data and numpy arrays are allowed")


def safe_unpickle(path: str) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _key(d: dict, name: str):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise KeyError(f"missing key {name!r}; has {[k.decode() if isinstance(k, bytes) else k for k in d]}")


def clean_class_name(name) -> str:
    name = name.decode() if isinstance(name, bytes) else str(name)
    return name.replace("_", " ").strip()


@register("dataset", "cifar100")
def read_cifar100(path: str, split: str = "test", **_) -> LabeledImageSource:
    """CIFAR-100 (fine labels) from the python or the binary release."""
    require_path(path, "CIFAR-100 folder", CIFAR100_LAYOUT)
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-100 split must be 'train' or 'test', got {split!r}")
    if os.path.isfile(os.path.join(path, split + ".bin")):
        names_file = require_path(os.path.join(path, "fine_label_names.txt"),
                                  "CIFAR-100 class names", CIFAR100_LAYOUT)
        with open(names_file, encoding="utf-8") as f:
            names = [clean_class_name(n) for n in f.read().split() if n.strip()]
        raw = np.fromfile(os.path.join(path, split + ".bin"), dtype=np.uint8)
        if raw.size % 3074:
            raise ValueError(f"{path}/{split}.bin: size {raw.size} is not a multiple of 3074 bytes")
        records = raw.reshape(-1, 3074)
        labels, pixels = records[:, 1].astype(int), records[:, 2:]
    else:
        meta = safe_unpickle(require_path(os.path.join(path, "meta"), "CIFAR-100 meta", CIFAR100_LAYOUT))
        data = safe_unpickle(require_path(os.path.join(path, split), f"CIFAR-100 {split}", CIFAR100_LAYOUT))
        names = [clean_class_name(n) for n in _key(meta, "fine_label_names")]
        labels = np.asarray(_key(data, "fine_labels"), dtype=int)
        pixels = np.asarray(_key(data, "data"), dtype=np.uint8)
    images = list(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    if len(names) != 100:
        raise ValueError(f"{path}: expected 100 class names, found {len(names)}")
    return LabeledImageSource(images, labels.tolist(), names, f"cifar100-{split}")


@register("dataset", "imagefolder")
def read_image_folder(path: str, class_names: Optional[List[str]] = None, **_) -> LabeledImageSource:
    """``ROOT/<class>/<image>``; the folder names (underscores as spaces) are the class names
    unless ``class_names`` gives one per folder, in sorted folder order."""
    require_path(path, "image folder", "ROOT/<class name>/<image files>")
    folders = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not folders:
        raise ValueError(f"{path}: no class sub-folders (expected ROOT/<class>/<images>)")
    names = [clean_class_name(d) for d in folders]
    if class_names is not None:
        if len(class_names) != len(folders):
            raise ValueError(f"{len(class_names)} class names for {len(folders)} folders")
        names = list(class_names)
    images, labels = [], []
    for label, folder in enumerate(folders):
        for fname in sorted(os.listdir(os.path.join(path, folder))):
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(path, folder, fname))
                labels.append(label)
    return LabeledImageSource(images, labels, names, os.path.basename(os.path.normpath(path)))


@register("dataset", "imagenet_meta")
def read_imagenet_meta(path: str, image_root: Optional[str] = None,
                       class_names: Optional[List[str]] = None, **_) -> LabeledImageSource:
    """DeCLIP's ImageNet evaluation set: JSON lines ``{"filename", "label", "label_name"}``
    (``val_official.json``) over a flat image folder (``image_root``, default the file's
    folder). The class names are the meta file's ``label_name`` per label, as DeCLIP's
    evaluation uses them, unless ``class_names`` is given."""
    layout = '{"filename": "ILSVRC2012_val_00000001.JPEG", "label": 65, "label_name": "sea snake"} per line'
    require_path(path, "ImageNet meta file", layout)
    root = image_root or os.path.dirname(os.path.abspath(path))
    rows, invalid = json_lines(path, layout, lambda item: (
        os.path.join(root, item["filename"].lstrip("/")), int(item["label"]), item.get("label_name")))
    images, labels = [r[0] for r in rows], [r[1] for r in rows]
    names = {}
    for _, label, name in rows:
        if name is not None:
            names.setdefault(label, str(name))
    count = max(labels) + 1 if labels else 0
    if class_names is None:
        missing = [i for i in range(count) if i not in names]
        if missing:
            raise ValueError(f"{path}: no label_name for label(s) {missing[:10]}; give "
                             "class_names (e.g. imagenet1k)")
    # Named class lists (a preset, a file) are resolved by the evaluation task, which checks
    # their length against the labels; the meta file's names stand in until then.
    own = [names.get(i, str(i)) for i in range(count)]
    chosen = list(class_names) if isinstance(class_names, (list, tuple)) else own
    return LabeledImageSource(images, labels, chosen, os.path.basename(path), invalid)


def list_image_files(folder: str) -> List[str]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS))


@register("dataset", "digits")
def read_digits(split: str = "train", path: Optional[str] = None, **_) -> LabeledImageSource:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as RGB images.

    A fixed, class-stratified 80/20 split; ``path`` is unused (the data ships with sklearn).
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    grey, target = _digits_arrays()
    rng = np.random.default_rng(1234)
    test_mask = np.zeros(len(target), bool)
    for label in range(10):
        idx = np.flatnonzero(target == label)
        test_mask[rng.choice(idx, size=len(idx) // 5, replace=False)] = True
    mask = test_mask if split == "test" else ~test_mask
    pixels = (grey[mask] * (255.0 / 16.0)).round().astype(np.uint8)
    images = [np.repeat(img[:, :, None], 3, axis=2) for img in pixels]
    return LabeledImageSource(images, target[mask].tolist(), list(DIGIT_NAMES), f"digits-{split}")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float, targets)`` exactly as ``sklearn.datasets.load_digits``
    returns them, read from the file scikit-learn ships. Importing scikit-learn itself (scipy
    and all) took about 1 s and 0.08 GB of every demo run's start-up."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@register("dataset", "digits_captions")
def read_digits_captions(split: str = "train", unique_per_class: bool = False,
                         path: Optional[str] = None, **_) -> ImageTextSource:
    """The digits as an image-caption set: each image captioned by every digit template
    ("a photo of the number seven.", ...). ``unique_per_class`` keeps one image per digit,
    which makes retrieval well posed (captions of one class are identical)."""
    digits = read_digits(split)
    images, captions, seen = [], [], set()
    for img, label in zip(digits.images, digits.labels):
        if unique_per_class and label in seen:
            continue
        seen.add(label)
        images.append(img)
        captions.append([t.format(DIGIT_NAMES[label]) for t in DIGIT_TEMPLATES])
    return ImageTextSource(images, captions, f"digits-captions-{split}")
