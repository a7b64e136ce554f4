"""``mindspore.dataset`` pipelines feeding training and evaluation.

Design choices, each for a reason:
- Python only reads bytes, tokenizes and draws random numbers; decoding, resizing and
  normalising run as MindSpore C++ ops in parallel workers (about 2x a plain PIL loop on 2
  cores, where Python workers are held back by the GIL).
- A file that is not a complete image (wrong magic number, missing end marker: garbage,
  truncated downloads) is filtered out before decoding; one that still fails to decode is
  dropped by the pipeline's error-skipping mode. Neither fails the epoch: the loader counts
  rows fed in against rows delivered and reports the difference as ``skipped``. Grayscale,
  CMYK and RGBA files decode to RGB; GIF/WebP/TIFF are converted through PIL.
- Every random choice (sample order, caption, crop) comes from a generator seeded by
  ``(seed, epoch, index)``, so an epoch is the same whether it runs whole or resumes
  mid-way, and the same for any number of workers. The crop is drawn in Python as relative
  numbers and applied after decoding as a slice; the resize to the model's size is C++.
- Evaluation resizes with PIL's bicubic filter (``Inter.PILCUBIC``) and crops with
  torchvision's offsets, which reproduces the PIL reference transform (open_clip's) to float
  rounding (tested).
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .base import (ImageTextSource, check_skip_fraction, LabeledImageSource, StreamingImageTextSource,
                   read_image_bytes)
from .batch import SampleBuilder
from .shards import ShardError
from ..normalization import PreprocessCfg
from .transforms import (Augment, apply_color, apply_crop, augment_draws,
                         image_transform)

Source = Union[ImageTextSource, LabeledImageSource, StreamingImageTextSource]
_UNREADABLE = np.frombuffer(b"unreadable", np.uint8)  # fails decoding -> skipped and counted
# The pipeline ends at rows and the loader stacks them into batches: MindSpore's batch op holds
# about ten finished batches whatever the queue sizes (0.36 GB of 64 images at 224 px, measured
# on 2.10), rows cost a stage ~16 x 0.6 MB. What one stage's queue may hold in rows
# (``ds.config``'s prefetch size, 16 by default): large images get shorter queues.
_QUEUED_ROW_BYTES = 16 << 20


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def looks_like_image(data: bytes) -> bool:
    """Cheap structural check (magic number and end marker) that catches non-images and
    truncated files before the decoder sees them."""
    if data[:2] == b"\xff\xd8":
        return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-32:]
    if data[:2] == b"BM" and len(data) >= 26:
        return len(data) >= int.from_bytes(data[2:6], "little")
    if data[:4] == b"GIF8":
        return data.rstrip(b"\x00")[-1:] == b";"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return len(data) >= int.from_bytes(data[4:8], "little") + 8
    return data[:4] in (b"II*\x00", b"MM\x00*")


def _to_bmp(data: bytes) -> Optional[bytes]:
    """Formats the C++ decoder does not read (GIF, WebP, TIFF) go through PIL once."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            out = io.BytesIO()
            img.convert("RGB").save(out, format="BMP")
            return out.getvalue()
    except Exception:  # PIL raises many types for broken files; all mean "unreadable"
        return None


def _encoded(ref) -> Tuple[np.ndarray, bool]:
    """``(encoded bytes as uint8, readable)`` of an image path, loader or bytes."""
    try:
        data = ref if isinstance(ref, bytes) else read_image_bytes(ref)
    except OSError:
        return _UNREADABLE, False
    if not data or not looks_like_image(data):
        return _UNREADABLE, False
    if data[:4] in (b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*"):
        data = _to_bmp(data)
        if data is None:
            return _UNREADABLE, False
    return np.frombuffer(data, np.uint8), True


def _image_column(ref) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(ref, np.ndarray):
        return ref, np.array(True)
    data, ok = _encoded(ref)
    return data, np.array(ok)


def decode_rgb(ref) -> Optional[np.ndarray]:
    """HWC uint8 RGB image of a path, bytes or array; None when it is not a readable image."""
    if isinstance(ref, np.ndarray):
        return ref if ref.ndim == 3 else np.repeat(ref[:, :, None], 3, axis=2)
    from mindspore.dataset import vision

    data, ok = _encoded(ref)
    if not ok:
        return None
    try:
        return vision.Decode()(data)
    except (RuntimeError, ValueError):
        return None


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool, rank: int, world: int,
                equal_parts: bool) -> np.ndarray:
    """This rank's sample indices for an epoch: one seeded permutation split into disjoint
    per-rank parts. With ``equal_parts`` every rank gets the same count (the remainder is left
    out), as data-parallel training needs."""
    order = _rng(seed, epoch).permutation(n) if shuffle else np.arange(n)
    if world > 1:
        per_rank = n // world
        order = order[:per_rank * world][rank::world] if equal_parts else order[rank::world]
    return order


class _Counted:
    """Counts rows handed to the pipeline and names those that are not readable images
    (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.fed = 0
        self.unreadable: List[str] = []

    def count(self) -> None:
        with self._lock:
            self.fed += 1

    def flag(self, name: str) -> None:
        with self._lock:
            self.unreadable.append(name)


def _ref_name(ref, index: int) -> str:
    """What a log line calls an image: its path, or its position in the dataset."""
    return ref if isinstance(ref, str) else getattr(ref, "name", f"sample {index}")


class _CaptionSamples(_Counted):
    """Training rows: (encoded image, the family's text columns..., crop draws)."""

    def __init__(self, source: ImageTextSource, order: np.ndarray, builder: SampleBuilder,
                 augment: Augment, seed: int, epoch: int):
        super().__init__()
        self.source, self.order, self.builder = source, order, builder
        self.augment, self.seed, self.epoch = augment, seed, epoch

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        self.count()
        index = int(self.order[i])
        rng = _rng(self.seed, self.epoch, index, 7)
        captions = self.source.captions[index]
        if not captions:  # an empty caption (YFCC15M has some): skipped and counted
            self.flag(f"{_ref_name(self.source.images[index], index)} (empty caption)")
            return (_UNREADABLE, *self.builder("", rng), *view_draws(rng, self.augment, self.builder),
                    np.array(False))
        caption = captions[int(rng.integers(len(captions)))]  # one random caption per epoch
        image, ok = _image_column(self.source.images[index])
        if not ok:
            self.flag(_ref_name(self.source.images[index], index))
        text = self.builder(caption, _rng(self.seed, self.epoch, index, 17))
        return (image, *text, *view_draws(rng, self.augment, self.builder), ok)


class _EvalSamples(_Counted):
    """Evaluation rows: (encoded image, label or sample index)."""

    def __init__(self, source, order: np.ndarray):
        super().__init__()
        self.source, self.order = source, order
        self.labels = getattr(source, "labels", None)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        self.count()
        index = int(self.order[i])
        image, ok = _image_column(self.source.images[index])
        if not ok:
            self.flag(_ref_name(self.source.images[index], index))
        second = self.labels[index] if self.labels is not None else index
        return image, np.array(second, np.int32), ok


class _StreamSamples(_Counted):
    """WebDataset rows for one rank and epoch: (encoded image, text columns..., crop draws)."""

    def __init__(self, source: StreamingImageTextSource, builder: SampleBuilder,
                 augment: Augment, seed: int, epoch: int, rank: int, world: int):
        super().__init__()
        self.source, self.builder, self.augment = source, builder, augment
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world
        self.num_rows = source.num_samples // world

    def __iter__(self) -> Iterator:
        shards = list(self.source.shards)
        rng = _rng(self.seed, self.epoch, self.rank, 11)
        # Ranks read disjoint shards when there are enough of them, else every rank reads all
        # shards and keeps every world-th sample (resampled ranks draw shards on their own).
        split_samples = not self.source.resampled and len(shards) < self.world
        produced, rounds = 0, 0
        while produced < self.num_rows:
            if self.source.resampled:
                chosen = [shards[int(i)] for i in rng.integers(len(shards), size=len(shards))]
            else:
                perm = _rng(self.seed, self.epoch, rounds).permutation(len(shards))
                chosen = [shards[int(i)] for i in perm]
                if not split_samples:
                    chosen = chosen[self.rank::self.world]
            rounds += 1
            got_any, n = False, -1
            for data, captions, key in self.source.iterate(chosen):
                if isinstance(key, ShardError):  # a failed shard: counted, named, not a sample
                    self.count()
                    self.flag(str(key))
                    yield (_UNREADABLE, *self.builder("", _rng(0)),
                           *view_draws(_rng(0), self.augment, self.builder), np.array(False))
                    continue
                n += 1
                if split_samples and n % self.world != self.rank:
                    continue
                got_any = True
                self.count()
                sample_rng = _rng(self.seed, self.epoch, self.rank, produced, 13)
                text = self.builder(captions[0] if captions else "",
                                    _rng(self.seed, self.epoch, self.rank, produced, 17))
                image, ok = _image_column(data) if data is not None else (_UNREADABLE, np.array(False))
                if not ok:
                    self.flag(str(key))
                yield (image, *text, *view_draws(sample_rng, self.augment, self.builder), ok)
                produced += 1
                if produced >= self.num_rows:
                    return
            if not got_any:
                raise ValueError(f"WebDataset shards {chosen[:3]} hold no samples"
                                 + (f"; read errors: {self.unreadable[-3:]}" if self.unreadable else ""))


def view_draws(rng: np.random.Generator, augment: Augment, builder: SampleBuilder) -> List[np.ndarray]:
    """One set of augmentation numbers per image view the family's batch asks for."""
    return [augment_draws(rng, augment) for _ in range(builder.views)]


def _normalize_ops(mean: Sequence[float], std: Sequence[float]):
    from mindspore.dataset import vision

    return [vision.Normalize([m * 255 for m in mean], [s * 255 for s in std]), vision.HWC2CHW()]


def _two_views(image: np.ndarray):
    return image, image.copy()


class _CenterCrop:
    """torchvision's center crop offsets (``round((h - size) / 2)``, half to even); MindSpore's
    C++ CenterCrop floors them, a one-pixel shift for odd margins."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return np.ascontiguousarray(image[top:top + self.size, left:left + self.size])


def _crop_keep_draws(image: np.ndarray, draws: np.ndarray):
    return apply_crop(image, draws), draws


def _is_ok(ok) -> bool:
    return bool(np.asarray(ok).item())


class Loader:
    """An epoch of numpy batches ``(images float32 NCHW, *columns)``: the family's text
    columns for training, labels or sample indices for evaluation.

    ``skipped`` is the number of rows dropped as unreadable and ``unreadable`` names those
    the reader recognised as not being images; both are exact once the epoch is read to its
    end (:meth:`drain` finishes an epoch whose last full batch was the run's last step).
    With ``drop_last`` the final partial batch is not yielded (``dropped`` counts its rows).
    """

    def __init__(self, samples, columns: Sequence[str], batch_size: int, drop_last: bool,
                 num_workers: int, image_size: int, train: bool, encoded: bool,
                 skip_batches: int = 0, random_access: bool = True, recolor: bool = False,
                 random_crop: bool = True, views: int = 1,
                 resize_size: Optional[int] = None, preprocess: PreprocessCfg = PreprocessCfg()):
        import mindspore.dataset as ds
        from mindspore.dataset import vision

        # Drop rows whose image fails to decode instead of failing the whole pipeline.
        ds.config.set_error_samples_mode(ds.config.ErrorSamplesMode.SKIP)
        workers = max(1, num_workers)
        columns = list(columns)
        # Training rows carry one set of augmentation draws per view; a second view is the
        # decoded image copied, then cropped and recoloured with its own draws.
        images = ["image", "image2"][:views]
        draws = ["crop", "crop2"][:views] if train else []
        all_columns = ["image"] + columns + draws + ["ok"]
        # Reading bytes is cheap: one Python worker; the decode/resize workers are C++ threads.
        kwargs = {"num_parallel_workers": 1, "python_multiprocessing": False} \
            if random_access else {}
        dataset = ds.GeneratorDataset(samples, column_names=all_columns, shuffle=False, **kwargs)
        dataset = dataset.filter(_is_ok, input_columns=["ok"])
        if encoded:
            dataset = dataset.map([vision.Decode()], input_columns=["image"],
                                  num_parallel_workers=workers)
        if views == 2:
            dataset = dataset.map(_two_views, input_columns=["image"],
                                  output_columns=["image", "image2"], num_parallel_workers=1)
        # open_clip's other resize modes and interpolations run through its exact PIL transform
        # (MindSpore's C++ bilinear resize does not antialias as PIL's does); the default,
        # bicubic shortest side + crop, stays on the C++ ops, which equal PIL's bicubic.
        pil_eval = not train and not preprocess.is_default_resize and resize_size is None
        for image, crop in zip(images, draws or [None] * views):
            if pil_eval:
                dataset = dataset.map(image_transform(image_size, preprocess=preprocess), input_columns=[image],
                                      num_parallel_workers=workers)
            elif train and random_crop:
                dataset = dataset.map(_crop_keep_draws, input_columns=[image, crop],
                                      output_columns=[image, crop], num_parallel_workers=1)
                dataset = dataset.map([vision.Resize((image_size, image_size), vision.Inter.PILCUBIC)],
                                      input_columns=[image], num_parallel_workers=workers)
            else:
                dataset = dataset.map([vision.Resize(resize_size or image_size, vision.Inter.PILCUBIC)],
                                      input_columns=[image], num_parallel_workers=workers)
                dataset = dataset.map(_CenterCrop(image_size), input_columns=[image],
                                      num_parallel_workers=1)
            if train and recolor:
                dataset = dataset.map(apply_color, input_columns=[image, crop],
                                      output_columns=[image], num_parallel_workers=1)
        dataset = dataset.project(images + columns)
        for image in images if not pil_eval else []:
            dataset = dataset.map(_normalize_ops(preprocess.mean, preprocess.std), input_columns=[image],
                                  num_parallel_workers=workers)
        if skip_batches:
            dataset = dataset.skip(skip_batches * batch_size)
        self.dataset, self.samples = dataset, samples
        self.names = images + columns
        self.batch_size, self.drop_last, self.skip_batches = batch_size, drop_last, skip_batches
        self.row_bytes = views * 3 * image_size * image_size * 4
        self.num_samples = len(samples) if hasattr(samples, "__len__") else samples.num_rows
        self.delivered = 0
        self.dropped = 0
        self.finished = False
        self._iterator = None

    @property
    def unreadable(self) -> List[str]:
        return list(self.samples.unreadable)

    @property
    def skipped(self) -> int:
        flagged = len(self.samples.unreadable)
        if not self.finished:
            # Rows fed but not yet delivered may be in flight: only the named ones are certain.
            return flagged
        # Rows that passed the structural check but failed to decode are dropped unnamed.
        failed_decode = (self.samples.fed - flagged - self.delivered - self.dropped
                         - self.skip_batches * self.batch_size)
        return flagged + max(failed_decode, 0)

    def drain(self) -> None:
        """Read the rest of an epoch without using it (at most one partial batch after the
        run's last step), so that its skipped count is exact."""
        if self._iterator is not None:
            for _ in self._iterator:
                pass

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, ...]]:
        self._iterator = self._rows()
        return self._iterator

    def _launch(self):
        """The pipeline's iterator, its queues sized to hold ~``_QUEUED_ROW_BYTES`` of rows per
        stage (2 to MindSpore's default of 16): the size is read when the pipeline starts, and
        the process-wide setting is put back for other pipelines."""
        import mindspore.dataset as ds

        default = ds.config.get_prefetch_size()
        ds.config.set_prefetch_size(max(2, min(default, _QUEUED_ROW_BYTES // self.row_bytes)))
        try:
            return self.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
        finally:
            ds.config.set_prefetch_size(default)

    def _rows(self) -> Iterator[Tuple[np.ndarray, ...]]:
        self.delivered = self.dropped = 0
        self.finished = False
        batch, filled = (), 0
        for row in self._launch():
            if not filled:  # rows are copied into place: one batch and one row are alive
                batch = tuple(np.empty((self.batch_size,) + np.shape(c), _batch_dtype(c)) for c in row)
            for name, column, value in zip(self.names, batch, row):
                if np.shape(value) != column.shape[1:]:  # assignment would broadcast it silently
                    raise ValueError(f"loader column {name!r}: a row of shape {np.shape(value)} in a "
                                     f"batch of rows shaped {column.shape[1:]}; a column's rows must "
                                     "share one shape")
                column[filled] = value
            filled += 1
            if filled == self.batch_size:
                self.delivered += filled
                done, batch, filled = batch, (), 0
                yield done
        if filled and self.drop_last:
            self.dropped += filled
        elif filled:
            self.delivered += filled
            yield tuple(column[:filled] for column in batch)
        self.finished = True


def _batch_dtype(value) -> np.dtype:
    """A column's dtype; strings as objects (a fixed-width string column would cut longer rows)."""
    dtype = np.asarray(value).dtype
    return np.dtype(object) if dtype.kind in "USO" else dtype


def _is_encoded(source) -> bool:
    return not (len(source.images) and isinstance(source.images[0], np.ndarray))


def train_loader(source: Union[ImageTextSource, StreamingImageTextSource],
                 builder: Union[SampleBuilder, Callable], image_size: int, batch_size: int,
                 epoch: int = 0, seed: int = 0, rank: int = 0, world: int = 1,
                 augment: Optional[Augment] = None, shuffle: bool = True, num_workers: int = 2,
                 skip_batches: int = 0, preprocess: PreprocessCfg = PreprocessCfg()) -> Loader:
    """Training batches of one epoch: one random caption per image, RandomResizedCrop (and
    the optional color augmentation of ``augment``), and the text columns of ``builder``
    (a family's :class:`SampleBuilder`; a plain tokenizer gives one ``tokens`` column).
    A builder with ``views = 2`` gets two independently augmented views of each image
    (batches ``(view1, view2, *columns)``). Of the model's preprocessing record
    (``model.preprocess``) training uses the mean and std: open_clip's training transform
    always crops and resizes this way (bicubic), whatever the record's resize mode."""
    augment = augment or Augment()
    if not isinstance(builder, SampleBuilder):
        builder = SampleBuilder(builder)
    views = builder.views
    if isinstance(source, StreamingImageTextSource):
        samples = _StreamSamples(source, builder, augment, seed, epoch, rank, world)
        return Loader(samples, builder.columns, batch_size, True, num_workers, image_size, True,
                      True, skip_batches, random_access=False, recolor=augment.recolors,
                      random_crop=augment.random_crop, views=views, preprocess=preprocess)
    order = epoch_order(len(source), seed, epoch, shuffle, rank, world, True)
    samples = _CaptionSamples(source, order, builder, augment, seed, epoch)
    return Loader(samples, builder.columns, batch_size, True, num_workers, image_size, True,
                  _is_encoded(source), skip_batches, recolor=augment.recolors,
                  random_crop=augment.random_crop, views=views, preprocess=preprocess)


def eval_image_loader(source: Union[ImageTextSource, LabeledImageSource], image_size: int,
                      batch_size: int, num_workers: int = 2, rank: int = 0, world: int = 1,
                      preprocess: PreprocessCfg = PreprocessCfg(),
                      resize_size: Optional[int] = None) -> Loader:
    """Evaluation batches in dataset order with the reference (deterministic) transform of
    the model's preprocessing record (``model.preprocess``: mean, std, interpolation, resize
    mode, fill), equal to open_clip's and CLIP_benchmark's.

    Labelled sources give ``(images, labels)``; caption sources ``(images, sample indices)``
    so that retrieval can leave out the captions of an image that could not be read.
    ``resize_size``: shortest side before the center crop (default ``image_size``; DeCLIP's
    ImageNet protocol resizes to 256 then crops 224).
    """
    order = epoch_order(len(source), 0, 0, False, rank, world, False)
    second = "label" if isinstance(source, LabeledImageSource) else "index"
    return Loader(_EvalSamples(source, order), (second,), batch_size, False, num_workers, image_size,
                  False, _is_encoded(source), resize_size=resize_size, preprocess=preprocess)


def build_source(dataset_cfg: dict) -> Source:
    """Read the dataset a config section names (``type`` + reader arguments)."""
    from ..registry import get, names

    kind = dataset_cfg.get("type")
    if not kind:
        raise ValueError(f"dataset config needs a 'type'; valid: {names('dataset')}")
    reader = get("dataset", kind)
    args = {k: v for k, v in dataset_cfg.items()
            if k not in ("type", "num_workers", "shuffle", "augment", "num_samples", "templates",
                         "caption_augment", "resize_size", "max_skip_fraction")
            and v is not None}
    source = reader(**args)
    check_skip_fraction(source, float(dataset_cfg.get("max_skip_fraction", 0.05)))
    if dataset_cfg.get("num_samples") and hasattr(source, "subset"):
        source = source.subset(int(dataset_cfg["num_samples"]))
    return source


def all_captions(source: ImageTextSource) -> Tuple[List[str], List[int]]:
    """Every caption of an eval set and the index of its image (for retrieval)."""
    texts, owners = [], []
    for i, caps in enumerate(source.captions):
        texts += caps
        owners += [i] * len(caps)
    return texts, owners
