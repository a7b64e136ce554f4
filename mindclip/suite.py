"""Benchmark suites by name: CLIP_benchmark's datasets (``wds/<name>``) fetched from the
Hugging Face Hub as weights are, or read from local copies, and the suite run over them.

``wds/vtab/cifar10`` is the dataset repository ``clip-benchmark/wds_vtab-cifar10`` (CLIP_benchmark's
naming: the name after ``wds/`` with ``/`` as ``-``). Only the split asked for and the dataset's
text files are downloaded, through ``huggingface_hub`` with its cache (``HF_HOME``), mirror
(``HF_ENDPOINT``), token and offline switch (``HF_HUB_OFFLINE``), and a progress bar per file.
``dataset_root`` instead names a local folder, with ``{dataset}`` / ``{dataset_cleaned}`` in it
as CLIP_benchmark's ``--dataset_root`` (``/data/wds_{dataset_cleaned}``).

This module sits on the front-door floor (DESIGN §1): evaluation receives a ``locate``
function and never imports the Hub.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from .evaluation.suite import SuiteDataset, format_table, run_suite

logger = logging.getLogger("mindclip")
SUITES_DIR = os.path.join(os.path.dirname(__file__), "evaluation", "suites")
DATASET_REPO = "clip-benchmark/wds_{}"
TEXT_FILES = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")


class DatasetUnavailable(ConnectionError):
    """A dataset named by the suite that is neither local nor fetchable now."""


def short_name(name: str) -> str:
    return name[len("wds/"):] if name.startswith("wds/") else name


def dataset_repo(name: str) -> str:
    """``wds/vtab/cifar10`` -> ``clip-benchmark/wds_vtab-cifar10``."""
    return DATASET_REPO.format(short_name(name).replace("/", "-"))


def dataset_folder(name: str, split: str = "test", dataset_root: Optional[str] = None) -> str:
    """The local folder of a suite dataset: ``dataset_root`` filled in, or the Hub snapshot of
    its repository holding ``split`` (downloaded once, then read from the cache)."""
    short = short_name(name)
    if dataset_root:
        folder = dataset_root.format(dataset=short, dataset_cleaned=short.replace("/", "-"))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{name}: {folder} does not exist (dataset_root {dataset_root!r})")
        return folder
    if not name.startswith("wds/"):
        raise ValueError(f"{name}: only wds/<name> datasets are fetched from the Hub; give dataset_root "
                         "for a local copy in CLIP_benchmark's layout")
    from .hub import _hub_options

    repo = dataset_repo(name)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo, repo_type="dataset", allow_patterns=[f"{split}/*", *TEXT_FILES],
                                   **_hub_options())
    except Exception as exc:  # offline and uncached, no network, no such repository
        raise _unavailable(name, repo, split, exc) from None
    if not os.path.isfile(os.path.join(folder, split, "nshards.txt")):
        raise _unavailable(name, repo, split, FileNotFoundError(f"{split}/nshards.txt not in the snapshot"))
    return folder


def _unavailable(name: str, repo: str, split: str, error: Exception) -> DatasetUnavailable:
    from .hub import _offline

    why = ("HF_HUB_OFFLINE is set and the Hugging Face cache does not hold it" if _offline()
           else f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
    return DatasetUnavailable(
        f"{name} ({split} split) is not in the Hugging Face cache and could not be fetched from the Hub "
        f"(dataset repository {repo}; {why}). Either reach the Hub (network, or a mirror in HF_ENDPOINT, "
        f"e.g. HF_ENDPOINT=https://hf-mirror.com; unset HF_HUB_OFFLINE) or give a local copy in "
        f"CLIP_benchmark's layout: --dataset_root DIR (with {{dataset}} or {{dataset_cleaned}} in it)")


def load_suite(spec: Union[str, Sequence[Any], None] = "openclip") -> List[SuiteDataset]:
    """A suite: the name of a packaged one (``openclip``: open_clip's results table), a YAML
    file with a ``datasets`` list, or a list of names / ``{name, column, task, main_metric}``."""
    if spec is None:
        spec = "openclip"
    if isinstance(spec, str):
        path = spec if os.path.isfile(spec) else os.path.join(SUITES_DIR, f"{spec}.yaml")
        if not os.path.isfile(path):
            packaged = sorted(f[:-5] for f in os.listdir(SUITES_DIR) if f.endswith(".yaml"))
            raise FileNotFoundError(f"suite {spec!r} is neither a file nor a packaged suite {packaged}")
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        spec = data.get("datasets") if isinstance(data, dict) else data
        if not isinstance(spec, list):
            raise ValueError(f"{path}: expected a 'datasets' list")
    return [SuiteDataset.from_entry(entry) for entry in spec]


def select(suite: List[SuiteDataset], only: Union[str, Sequence[str], None]) -> List[SuiteDataset]:
    """The suite's entries named in ``only`` (comma-separated or a list), in that order; a
    name outside the suite runs with the defaults (task from the dataset, acc1 / mean R@1)."""
    if not only:
        return suite
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else list(only)
    by_name = {d.name: d for d in suite}
    return [by_name.get(n, SuiteDataset(n)) for n in names if n]


def evaluate_suite(model: Any, suite: Union[str, Sequence[Any], None] = "openclip",
                   datasets: Union[str, Sequence[str], None] = None, output_dir: str = "suite_results",
                   dataset_root: Optional[str] = None, split: str = "test", language: str = "en",
                   batch_size: int = 64, num_workers: int = 2, max_skip_fraction: float = 0.05,
                   pretrained: Optional[str] = None, progress: bool = True,
                   model_name: Optional[str] = None, task: str = "auto",
                   linear_probe: Optional[Dict] = None) -> List[Dict]:
    """Evaluate a model on a benchmark suite, as open_clip's results table is made.

    ``model``: a model, or an architecture name (with ``pretrained``: a tag, folder or file;
    a name means real weights); ``model_name`` / ``pretrained`` name it in the table. ``datasets`` picks entries (``"wds/cifar10,wds/vtab/pets"``).
    Writes ``results.jsonl`` (a record per dataset, CLIP_benchmark's metric keys),
    ``results.csv`` (open_clip's columns) and ``results.png`` into ``output_dir``; datasets
    finished by an earlier run into the same folder are not run again. ``task="linear_probe"``
    runs CLIP_benchmark's linear probe instead of zero-shot (the train split is fetched too;
    ``linear_probe``: fewshot_k, lr, epochs, batch_size, seed, val_proportion). Returns the records."""
    from .factory import create_model, get_tokenizer
    from .plots import plot_suite

    name = model_name or (model if isinstance(model, str) else type(model).__name__)
    if isinstance(model, str):
        model = create_model(model, pretrained=pretrained)
    entries = select(load_suite(suite), datasets)
    records = run_suite(model, get_tokenizer(model), entries, output_dir,
                        lambda n, part: dataset_folder(n, part, dataset_root), split=split, language=language,
                        batch_size=batch_size, num_workers=num_workers, max_skip_fraction=max_skip_fraction,
                        model_name=name, pretrained=pretrained, progress=progress, task=task,
                        linear_probe=linear_probe)
    plot_suite(records, os.path.join(output_dir, "results.png"), f"{name} {pretrained or ''}".strip())
    logger.info("\n" + format_table(records))
    return records
