"""A benchmark suite, as open_clip's results table is made: every dataset of a suite file in
CLIP_benchmark's layout, each with its task and the main metric the table reports.

Each dataset's images are encoded once, and each prompt (class name x template) once per model
and run (datasets that share class names, as ImageNet and its variants do, share their text
features). Every finished dataset is written to ``results.jsonl`` at once (whole-file replace),
so an interrupted suite resumes where it stopped; a dataset that cannot be had is recorded as
missing with the reason and the rest still run. ``results.csv`` (open_clip's
``openclip_results.csv`` columns) follows the records.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..data.base import ImageTextSource, LabeledImageSource, check_skip_fraction
from ..data.benchmark_wds import read_benchmark_wds
from ..data.loader import eval_image_loader
from ..models.weights_io import atomic_write
from .benchmark_prompts import mark_language, positional, published_prompts
from .encode import encode_loader, encode_texts
from .metrics import (GROUP_METRICS, benchmark_classification_metrics, benchmark_group_metric,
                      benchmark_retrieval_metrics)
from .zero_shot import classifier_weights

logger = logging.getLogger("mindclip")
TASKS = ("auto", "zeroshot_classification", "zeroshot_retrieval", "linear_probe")
PROBE_DEFAULTS = {"fewshot_k": -1, "lr": 0.1, "epochs": 10, "batch_size": 64, "seed": 0, "val_proportion": None}
RETRIEVAL_MAIN = "mean_recall@1"  # DataComp's (open_clip's table): both directions' R@1, averaged


@dataclass
class SuiteDataset:
    """One dataset of a suite: its CLIP_benchmark name, the table's column, the task
    (``auto``: from the dataset's type) and the main metric (default acc1 / mean_recall@1)."""

    name: str
    column: Optional[str] = None
    task: str = "auto"
    main_metric: Optional[str] = None

    @classmethod
    def from_entry(cls, entry: Any) -> "SuiteDataset":
        if isinstance(entry, str):
            return cls(entry)
        unknown = sorted(set(entry) - {"name", "column", "task", "main_metric"})
        if unknown or "name" not in entry:
            raise ValueError(f"suite dataset {entry}: keys are name, column, task, main_metric"
                             + (f" (unknown: {unknown})" if unknown else " (name is required)"))
        if entry.get("task", "auto") not in TASKS:
            raise ValueError(f"suite dataset {entry['name']}: task {entry['task']!r}; valid: {list(TASKS)}")
        return cls(**entry)


class SuiteResults:
    """``results.jsonl`` of an output folder: one record per dataset, replaced whole on write."""

    def __init__(self, output_dir: str):
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "results.jsonl")
        self.records: Dict[str, Dict] = {}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        self.records[record["dataset"]] = record

    def done(self, entry: SuiteDataset, model: str, pretrained: Any, language: str) -> Optional[Dict]:
        """The finished record of ``entry`` for this model, language and task, if any."""
        record = self.records.get(entry.name)
        if record and record.get("status") == "ok" and (record.get("model"), record.get("pretrained"),
                                                        record.get("language")) == (model, pretrained, language) \
                and entry.task in ("auto", record.get("task")):
            return record
        return None

    def put(self, record: Dict) -> None:
        self.records[record["dataset"]] = record

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                for r in self.records.values():
                    f.write(json.dumps(r) + "\n")
                f.flush()
                os.fsync(f.fileno())

        atomic_write(self.path, write)


class _TextFeatures:
    """Normalised text features per string, each encoded once per model and run."""

    def __init__(self, model: Any, tokenizer: Callable, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.cache: Dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            for text, feat in zip(new, encode_texts(self.model, self.tokenizer, new, self.batch_size)):
                self.cache[text] = feat
        return np.stack([self.cache[t] for t in texts])


def _progress(loader, name: str, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=len(loader), desc=name, unit="batch", leave=False)


def _classification(model, source: LabeledImageSource, dataset: str, language: str, texts: _TextFeatures,
                    batch_size: int, num_workers: int, progress: bool, main_metric: Optional[str]) -> Dict:
    names = source.class_names or None
    templates = positional(source.templates) if source.templates else None
    if language != "en" or names is None or templates is None:
        published_names, published_templates = published_prompts(dataset, language)
        if language != "en":  # the folder's files are English
            names, templates = published_names, published_templates
        names, templates = names or published_names, templates or published_templates
    if not names or not templates:
        raise ValueError(f"no {language} class names/templates for {dataset} (neither in the dataset "
                          "folder nor in CLIP_benchmark's published lists)")
    if max(source.labels, default=-1) >= len(names):
        raise ValueError(f"{dataset}: label {max(source.labels)} but {len(names)} class names")
    classifier = classifier_weights(texts, names, templates)
    # With metadata the loader yields sample indices, so that labels and groups follow the
    # images that were read (an unreadable image is skipped).
    indexed = source if source.metadata is None else replace(source, labels=list(range(len(source))))
    loader = eval_image_loader(indexed, model.image_size, batch_size, num_workers=num_workers,
                               preprocess=model.preprocess)
    images, second = encode_loader(model, _progress(loader, dataset, progress), batch_size)
    labels = second if source.metadata is None else np.asarray(source.labels)[second]
    logits = 100.0 * images @ classifier
    metrics = benchmark_classification_metrics(logits, labels)
    if main_metric in GROUP_METRICS:
        metrics[main_metric] = benchmark_group_metric(
            main_metric, logits, labels, None if source.metadata is None else source.metadata[second])
    return {"metrics": metrics, "num_samples": int(len(labels)), "skipped_images": int(loader.skipped),
            "num_classes": len(names), "num_templates": len(templates)}


def _retrieval(model, source: ImageTextSource, dataset: str, texts: _TextFeatures, batch_size: int,
               num_workers: int, progress: bool) -> Dict:
    loader = eval_image_loader(source, model.image_size, batch_size, num_workers=num_workers,
                               preprocess=model.preprocess)
    images, indices = encode_loader(model, _progress(loader, dataset, progress), batch_size)
    captions = [(row, c) for row, i in enumerate(indices) for c in source.captions[int(i)]]
    text_feats = texts([c for _, c in captions])
    metrics = benchmark_retrieval_metrics(images, text_feats, [row for row, _ in captions])
    return {"metrics": metrics, "num_samples": int(len(indices)), "num_texts": len(captions),
            "skipped_images": int(len(source) - len(indices))}


CLASSIFICATION_METRICS = ("acc1", "acc5", "mean_per_class_recall")
RETRIEVAL_METRICS = (RETRIEVAL_MAIN,) + tuple(f"{kind}_retrieval_recall@{k}" for kind in ("image", "text")
                                             for k in (1, 5, 10))


def check_main_metric(entry: SuiteDataset) -> None:
    """Refuse, before any work, a main metric mindclip does not compute (WinoGAViL's Jaccard
    score: DataComp's association task, not a classification)."""
    computed = CLASSIFICATION_METRICS + GROUP_METRICS + RETRIEVAL_METRICS
    if entry.main_metric and entry.main_metric not in computed:
        raise ValueError(f"main metric {entry.main_metric!r} is not computed by mindclip (it computes "
                         "classification, group and retrieval metrics, not association scores such as "
                         f"WinoGAViL's Jaccard score); computed: {list(computed)}")


def _linear_probe(model, source: LabeledImageSource, train: LabeledImageSource, dataset: str,
                  options: Dict, batch_size: int, num_workers: int, progress: bool) -> Dict:
    """CLIP_benchmark's linear probe on the test split, the head trained on the train split's
    features (a ``val_proportion`` of it held out for the weight-decay search)."""
    from .linear_probe import linear_probe, split_validation

    splits = []
    for part, name in ((train, f"{dataset} train"), (source, dataset)):
        loader = eval_image_loader(part, model.image_size, batch_size, num_workers=num_workers,
                                   preprocess=model.preprocess)
        feats, labels = encode_loader(model, _progress(loader, name, progress), batch_size)
        splits.append((feats, labels.astype(np.int64)))
    (train_split, test_split), val = splits, None
    if options["val_proportion"]:
        train_split, val = split_validation(*train_split, float(options["val_proportion"]), int(options["seed"]))
    metrics = linear_probe(train_split, test_split, val, int(options["fewshot_k"]), float(options["lr"]),
                           int(options["epochs"]), int(options["batch_size"]), int(options["seed"]))
    return {"metrics": metrics, "num_samples": int(len(test_split[1])), "num_train": int(len(train_split[1])),
            "skipped_images": int(len(source) - len(test_split[1]))}


def main_score(task: str, metrics: Dict[str, float], main_metric: Optional[str]) -> float:
    if task == "linear_probe":
        return float(metrics["lp_" + (main_metric or "acc1")])
    metric = main_metric or (RETRIEVAL_MAIN if task == "zeroshot_retrieval" else "acc1")
    if metric == RETRIEVAL_MAIN:
        return (metrics["image_retrieval_recall@1"] + metrics["text_retrieval_recall@1"]) / 2
    if metric not in metrics:
        raise ValueError(f"main metric {metric!r} is not computed for {task}; computed: {sorted(metrics)}")
    return float(metrics[metric])


def run_suite(model: Any, tokenizer: Callable, datasets: Sequence[SuiteDataset], output_dir: str,
              locate: Callable[[str, str], str], split: str = "test", language: str = "en",
              batch_size: int = 64, num_workers: int = 2, max_skip_fraction: float = 0.05,
              model_name: str = "", pretrained: Any = None, progress: bool = True,
              task: str = "auto", linear_probe: Optional[Dict] = None) -> List[Dict]:
    """Evaluate ``model`` on every dataset (``locate(name, split)`` gives its folder or raises
    why it cannot), skipping those ``results.jsonl`` already holds for this model; returns the
    records in suite order and writes ``results.csv``. ``task`` other than ``auto`` replaces
    every entry's (``linear_probe``: CLIP_benchmark's, options in ``linear_probe``)."""
    unknown = sorted(set(linear_probe or {}) - set(PROBE_DEFAULTS))
    if unknown or task not in TASKS:
        raise ValueError(f"suite task {task!r} (valid: {list(TASKS)}); linear_probe options "
                         f"{unknown} (valid: {sorted(PROBE_DEFAULTS)})")
    probe = dict(PROBE_DEFAULTS, **(linear_probe or {}))
    language_token = mark_language(tokenizer, language)
    if language_token:
        logger.info(f"texts are marked {language_token} (the tokenizer's language token for {language!r})")
    results = SuiteResults(output_dir)
    texts = _TextFeatures(model, tokenizer, batch_size)
    model.set_train(False)
    ordered = []
    for entry in datasets:
        if task != "auto":
            entry = SuiteDataset(entry.name, entry.column, task,
                                 entry.main_metric if task == entry.task else None)
        record = results.done(entry, model_name, pretrained, language)
        if record is not None:
            logger.info(f"{entry.name}: done in an earlier run, {record['score']:.4f}")
            ordered.append(record)
            continue
        start = time.time()
        record = {"dataset": entry.name, "column": entry.column or entry.name, "model": model_name,
                  "pretrained": pretrained, "language": language, "split": split}
        if language_token:
            record["language_token"] = language_token
        try:
            check_main_metric(entry)
            source = read_benchmark_wds(locate(entry.name, split), split, max_skip_fraction)
            check_skip_fraction(source, max_skip_fraction)
            is_retrieval = isinstance(source, ImageTextSource)
            kind = entry.task if entry.task != "auto" else (
                "zeroshot_retrieval" if is_retrieval else "zeroshot_classification")
            if (kind == "zeroshot_retrieval") != is_retrieval:
                raise ValueError(f"task {kind} on a {'caption' if is_retrieval else 'labelled'} dataset")
            if kind == "linear_probe":
                train = read_benchmark_wds(locate(entry.name, "train"), "train", max_skip_fraction)
                check_skip_fraction(train, max_skip_fraction)
                out = _linear_probe(model, source, train, entry.name, probe, batch_size, num_workers, progress)
            elif is_retrieval:
                out = _retrieval(model, source, entry.name, texts, batch_size, num_workers, progress)
            else:
                out = _classification(model, source, entry.name, language, texts, batch_size, num_workers, progress,
                                      entry.main_metric)
            score = main_score(kind, out["metrics"], entry.main_metric)
            record.update(task=kind, main_metric=entry.main_metric or (
                RETRIEVAL_MAIN if is_retrieval else "acc1"), score=score, status="ok", **out)
            logger.info(f"{entry.name}: {record['main_metric']} {score:.4f} ({time.time() - start:.0f} s)")
        except (OSError, ValueError) as exc:  # unavailable, damaged, unsupported
            reason = " ".join(str(exc).split())
            record.update(task=entry.task, status="missing", reason=reason)
            logger.warning(f"{entry.name}: missing ({reason})")
        record["seconds"] = round(time.time() - start, 2)
        results.put(record)
        ordered.append(record)
    write_table(ordered, os.path.join(output_dir, "results.csv"), model_name, pretrained)
    return ordered


def write_table(records: Sequence[Dict], path: str, model_name: str, pretrained: Any) -> None:
    """open_clip's ``openclip_results.csv`` row: name, pretrained, the average of the main
    metrics over the datasets that ran, then one column per dataset (empty when missing)."""
    scores = [r["score"] for r in records if r.get("status") == "ok" and not math.isnan(r["score"])]
    header = ["name", "pretrained", f"Average perf. on {len(scores)} datasets"] + [r["column"] for r in records]
    row = [model_name, pretrained or "", f"{np.mean(scores):.4f}" if scores else ""]
    row += [f"{r['score']:.4f}" if r.get("status") == "ok" else "" for r in records]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, row])

    atomic_write(path, write)


def format_table(records: Sequence[Dict]) -> str:
    """The suite as text: dataset, task, main metric and score, or why it is missing."""
    lines = [f"{'dataset':40s} {'task':24s} {'metric':22s} score"]
    for r in records:
        if r.get("status") == "ok":
            lines.append(f"{r['dataset']:40s} {r['task']:24s} {r['main_metric']:22s} {r['score']:.4f}")
        else:
            lines.append(f"{r['dataset']:40s} {'':24s} {'':22s} missing: {r['reason']}")
    return "\n".join(lines)
