"""The benchmark suite on datasets written here in CLIP_benchmark's WebDataset layout, checked
against CLIP_benchmark itself (its dataset builder and metrics, on open_clip with the same
weights), through the Hub cache, the Python API and ``run_mindformer.py``."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mindclip
from conftest import build_openclip
from test_hub import offline_hub, put_in_hf_cache  # noqa: F401  (fixture)
from test_openclip_tokenizers import nllb_folder
from test_openclip_zoo import build_reference, hub_folder, shrink
from mindclip.evaluation.benchmark_prompts import published_prompts
from mindclip.evaluation.suite import SuiteDataset, run_suite
from mindclip.tokenizer.openclip_hf import OpenCLIPHFTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["red circle", "green bar", "blue square", "stripes", "noise", "dots"]
FORMATS = ("webp", "png", "jpg")


def _image(rng, label):
    h, w = rng.integers(24, 60, 2)
    pixels = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    pixels[..., label % 3] += np.uint8(100 + 20 * label)
    if label >= 3:
        pixels[:: label - 1] = 255
    return Image.fromarray(pixels)


def _write_split(folder, samples, per_shard):
    """samples: (image, {ext: bytes}) in order, into {0..n-1}.tar + nshards.txt."""
    os.makedirs(folder, exist_ok=True)
    shards = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
    for s, chunk in enumerate(shards):
        with tarfile.open(os.path.join(folder, f"{s}.tar"), "w") as tar:
            for j, (image, extra) in enumerate(chunk):
                key = f"s{s:03d}{j:04d}"
                fmt = FORMATS[(s + j) % len(FORMATS)]
                buf = io.BytesIO()
                image.save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
                for ext, data in ((fmt, buf.getvalue()), *extra.items()):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    with open(os.path.join(folder, "nshards.txt"), "w") as f:
        f.write(f"{len(shards)}\n")


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


def write_classification(root, n=36, seed=0, templates=("a photo of a {c}.", "a drawing of the {c}."),
                         metadata=None):
    """``metadata``: per-sample integer vectors, written as KEY.npy (WILDS/fairness layout)."""
    rng = np.random.default_rng(seed)
    labels = [i % len(CLASSES) for i in range(n)]
    extras = [{"cls": f"{y}".encode(), **({} if metadata is None else {"npy": _npy(metadata[i])})}
              for i, y in enumerate(labels)]
    _write_split(os.path.join(root, "test"), [(_image(rng, y), extra) for y, extra in zip(labels, extras)], 16)
    with open(os.path.join(root, "classnames.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    with open(os.path.join(root, "zeroshot_classification_templates.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(templates) + "\n")
    return root


def write_retrieval(root, n=14, seed=1):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        y = i % len(CLASSES)
        captions = [f"a {CLASSES[y]} number {i}", f"picture {i} of a {CLASSES[y]}"][: 1 + i % 2]
        samples.append((_image(rng, y), {"txt": "\n".join(captions).encode()}))
    _write_split(os.path.join(root, "test"), samples, 8)
    with open(os.path.join(root, "dataset_type.txt"), "w") as f:
        f.write("retrieval\n")
    return root


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """An open_clip folder of random ViT-Tiny-8 weights and three datasets in CLIP_benchmark's
    layout under data/wds_<name>: shapes (classification), captions (retrieval), italian
    (classification, Italian templates)."""
    root = tmp_path_factory.mktemp("suite")
    reference = build_openclip("ViT-Tiny-8", seed=11)
    hub = root / "open_clip"
    os.makedirs(hub)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(hub / "open_clip_model.safetensors"))
    with open(hub / "open_clip_config.json", "w") as f:
        json.dump({"model_cfg": mindclip.get_model_config("ViT-Tiny-8").to_dict(),
                   "preprocess_cfg": {"size": 32}}, f)
    data = root / "data"
    write_classification(str(data / "wds_shapes"))
    write_retrieval(str(data / "wds_captions"))
    write_classification(str(data / "wds_italian"), n=18, seed=2,
                         templates=("una foto di {c}.", "un disegno del {c}.", "{c} in una immagine"))
    model = mindclip.create_model(f"local-dir:{hub}")
    return root, model


def _clip_benchmark(folder, name, task):
    """CLIP_benchmark's own numbers: its WebDataset builder, loader and metrics on open_clip."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder / 'open_clip'}")
    dataset = build_dataset(f"wds/{name}", root=str(folder / "data" / f"wds_{name}"), transform=preprocess,
                            split="test", task=task)
    loader = torch.utils.data.DataLoader(dataset.batched(8), batch_size=None, shuffle=False, num_workers=0)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    if task == "zeroshot_retrieval":
        return zeroshot_retrieval.evaluate(model.eval(), loader, tokenizer, recall_k_list=[1, 5, 10],
                                           device="cpu", amp=False)
    return zeroshot_classification.evaluate(model.eval(), loader, tokenizer, dataset.classes, dataset.templates,
                                            "cpu", amp=False)


def test_numbers_equal_clip_benchmarks(suite, tmp_path):
    folder, model = suite
    records = mindclip.evaluate_suite(model, ["wds/shapes", "wds/captions", "wds/italian"], output_dir=str(tmp_path),
                                      dataset_root=str(folder / "data" / "wds_{dataset_cleaned}"), batch_size=8,
                                      progress=False)
    assert [r["status"] for r in records] == ["ok"] * 3
    for record, name, n in zip(records, ("shapes", "captions", "italian"), (36, 14, 18)):
        task = record["task"]
        expected = _clip_benchmark(folder, name, task)
        assert record["num_samples"] == n and set(record["metrics"]) == set(expected), name
        for key, value in expected.items():  # identical within one sample
            assert abs(record["metrics"][key] - value) <= 1.0 / n + 1e-9, (name, key, record["metrics"][key], value)
    assert records[2]["num_templates"] == 3 and records[0]["num_classes"] == 6
    shapes, captions = records[0], records[1]
    assert shapes["score"] == shapes["metrics"]["acc1"] and shapes["main_metric"] == "acc1"
    assert captions["score"] == pytest.approx((captions["metrics"]["image_retrieval_recall@1"]
                                               + captions["metrics"]["text_retrieval_recall@1"]) / 2)
    lines = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert [r["dataset"] for r in lines] == ["wds/shapes", "wds/captions", "wds/italian"]
    rows = list(csv.reader(open(tmp_path / "results.csv")))
    assert rows[0] == ["name", "pretrained", "Average perf. on 3 datasets", "wds/shapes", "wds/captions", "wds/italian"]
    assert float(rows[1][2]) == pytest.approx(np.mean([r["score"] for r in records]), abs=1e-4)
    assert os.path.getsize(tmp_path / "results.png") > 0


def test_damaged_shard_unsupported_metric_and_languages_are_reported(suite, tmp_path):
    folder, model = suite
    data = tmp_path / "data"
    write_classification(str(data / "wds_damaged"))
    shard = data / "wds_damaged" / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # cut inside its first members
    entries = [{"name": "wds/damaged"}, {"name": "wds/winogavil", "main_metric": "jaccard_score_10-12"},
               {"name": "wds/absent"}]
    records = mindclip.evaluate_suite(model, entries, output_dir=str(tmp_path / "out"),
                                      dataset_root=str(data / "wds_{dataset_cleaned}"), batch_size=8, progress=False)
    assert [r["status"] for r in records] == ["missing"] * 3
    assert "1 of 3 shards cannot be read (more than max_skip_fraction 0.05)" in records[0]["reason"]
    assert f"{shard}: cut inside " in records[0]["reason"]
    assert "main metric 'jaccard_score_10-12' is not computed by mindclip" in records[1]["reason"]
    assert f"{data}/wds_absent does not exist" in records[2]["reason"]
    lenient = mindclip.evaluate_suite(model, ["wds/damaged"], output_dir=str(tmp_path / "lenient"),
                                      dataset_root=str(data / "wds_{dataset_cleaned}"), batch_size=8,
                                      max_skip_fraction=0.5, progress=False)[0]
    assert lenient["status"] == "ok" and 20 <= lenient["num_samples"] < 36
    # Italian lists exist for ImageNet only; CLIP_benchmark's {c} becomes our {}
    names, templates = published_prompts("wds/imagenet1k", "it")
    assert len(names) == 1000 and templates[0] == "una brutta foto di {}"
    italian = mindclip.evaluate_suite(model, ["wds/shapes"], output_dir=str(tmp_path / "it"), language="it",
                                      dataset_root=str(folder / "data" / "wds_{dataset_cleaned}"), progress=False)
    assert italian[0]["status"] == "missing" and "no it class names/templates for wds/shapes" in italian[0]["reason"]


def test_nllb_clip_texts_are_marked_with_the_suites_language(suite, tmp_path):
    """A (shrunk) NLLB-CLIP in an Italian suite run: every text is marked ita_Latn, as
    CLIP_benchmark's set_language does, and the retrieval numbers equal CLIP_benchmark's on
    open_clip's model with Hugging Face's NllbTokenizer for src_lang ita_Latn."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_retrieval
    from transformers import AutoTokenizer

    folder = suite[0]
    name, base = "nllb-clip-tiny-suite", open_clip.get_model_config("nllb-clip-base")
    cfg = shrink(base, folder=tmp_path / "m2m100")
    reference = build_reference(cfg, name)
    model = mindclip.create_model(f"local-dir:{hub_folder(reference, cfg, tmp_path / 'hub')}")
    tokens = nllb_folder(tmp_path / "nllb")
    tokenizer = OpenCLIPHFTokenizer(tokens, context_length=77)
    records = run_suite(model, tokenizer, [SuiteDataset("wds/captions")], str(tmp_path / "out"),
                        lambda _, split: str(folder / "data" / "wds_captions"), language="it", batch_size=8,
                        progress=False)
    hf = AutoTokenizer.from_pretrained(tokens, src_lang="ita_Latn")
    assert records[0]["status"] == "ok" and records[0]["language_token"] == "ita_Latn"
    assert tokenizer(["x"])[0, 0] == hf.convert_tokens_to_ids("ita_Latn")

    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)
    dataset = build_dataset("wds/captions", root=str(folder / "data" / "wds_captions"), transform=preprocess,
                            split="test", task="zeroshot_retrieval")
    loader = torch.utils.data.DataLoader(dataset.batched(8), batch_size=None, shuffle=False, num_workers=0)
    expected = zeroshot_retrieval.evaluate(
        reference, loader, lambda texts: hf(texts, padding="max_length", max_length=77, truncation=True,
                                            return_tensors="pt").input_ids,
        recall_k_list=[1, 5, 10], device="cpu", amp=False)
    for key, value in expected.items():
        assert abs(records[0]["metrics"][key] - value) <= 1.0 / 14 + 1e-9, (key, records[0]["metrics"][key], value)


def _datacomp_group_metrics(logits, labels, metadata):
    """DataComp's evaluators (eval_utils/wilds_eval.py, fairness_eval.py) on WILDS' metric
    objects: GeoDE's acc_wg and FMoW's worst region/year (top-1 by metadata field 0/1), Dollar
    Street's acc_top5_wg (top-5 by field 0), iWildCam's F1-macro_all. WILDS' group mean needs
    torch_scatter; the same mean is written here with index_add."""
    import wilds.common.metrics.metric as wilds_metric
    from wilds.common.metrics.all_metrics import Accuracy, F1

    def avg_over_groups(v, g, n_groups):
        counts = torch.bincount(g, minlength=n_groups).float()
        return torch.zeros(n_groups).index_add_(0, g, v.float()) / counts, counts

    class TopK(Accuracy):
        def _compute_element_wise(self, y_pred, y_true):
            return (y_pred == y_true.unsqueeze(-1)).any(-1).float()

    wilds_metric.avg_over_groups = avg_over_groups
    y = torch.as_tensor(labels)
    logits, meta = torch.as_tensor(logits), torch.as_tensor(metadata)
    pred, top5 = logits.argmax(-1), logits.topk(5, dim=-1).indices

    def worst(metric, y_pred, column):
        g = meta[:, column]
        return float(metric.compute_group_wise(y_pred, y, g, int(g.max()) + 1)[metric.worst_group_metric_field])

    return {"acc_wg": worst(Accuracy(), pred, 0), "acc_worst_region": worst(Accuracy(), pred, 0),
            "acc_worst_year": worst(Accuracy(), pred, 1), "acc_top5_wg": worst(TopK(name="acc_top5"), top5, 0),
            "F1-macro_all": float(F1(average="macro").compute(pred, y)["F1-macro_all"])}


def test_group_metrics_equal_datacomps_on_wilds(suite, tmp_path):
    """The table's group metrics (FMoW, GeoDE, Dollar Street, iWildCam) from per-sample .npy
    metadata equal DataComp's evaluation (WILDS' metrics) of open_clip's logits on the same
    weights; an unreadable image drops its own label and group, not another's."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    folder, model = suite
    n = 48  # groups: region 0, 1, 3 (2 empty), year 0..2
    metadata = np.array([[(0, 1, 3)[i % 3], (i // 5) % 3] for i in range(n)])
    root = write_classification(str(tmp_path / "wds_groups"), n=n, seed=5, metadata=metadata)
    reference, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder / 'open_clip'}")
    dataset = build_dataset("wds/groups", root=root, transform=preprocess, split="test",
                            task="zeroshot_classification")
    loader = torch.utils.data.DataLoader(dataset.batched(8), batch_size=None, shuffle=False, num_workers=0)
    classifier = zero_shot_classifier(reference.eval(), open_clip.get_tokenizer("ViT-B-32"), dataset.classes,
                                      dataset.templates, "cpu", amp=False)
    logits, labels = (t.numpy() for t in run_classification(reference, classifier, loader, "cpu", amp=False))
    expected = _datacomp_group_metrics(logits, labels, metadata)

    def ours(data_root, out):
        entries = [SuiteDataset(f"wds/{m}", main_metric=m) for m in expected]
        return {r["main_metric"]: r for r in run_suite(model, mindclip.get_tokenizer(model), entries, str(out),
                                                       lambda name, split: data_root, batch_size=8, progress=False)}

    got = ours(root, tmp_path / "out")
    for metric, value in expected.items():
        assert got[metric]["status"] == "ok" and got[metric]["score"] == got[metric]["metrics"][metric]
        assert abs(got[metric]["score"] - value) <= 1e-6, (metric, got[metric]["score"], value)
    # one image made unreadable: the metrics are those of the other samples
    shard = os.path.join(root, "test", "0.tar")
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            if m.name.startswith("s0000003.") and not m.name.endswith((".cls", ".npy")):
                data = b"not an image"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    kept = np.arange(n) != 3
    expected = _datacomp_group_metrics(logits[kept], labels[kept], metadata[kept])
    got = ours(root, tmp_path / "damaged")
    for metric, value in expected.items():
        assert got[metric]["skipped_images"] == 1 and got[metric]["num_samples"] == n - 1
        assert abs(got[metric]["score"] - value) <= 1e-6, (metric, got[metric]["score"], value)
    plain = run_suite(model, mindclip.get_tokenizer(model), [SuiteDataset("wds/shapes", main_metric="acc_wg")],
                      str(tmp_path / "plain"), lambda name, split: str(folder / "data" / "wds_shapes"),
                      batch_size=8, progress=False)[0]
    assert plain["status"] == "missing" and "acc_wg groups samples by metadata field 0: the dataset needs " \
        "per-sample .npy metadata" in plain["reason"]


def test_datasets_by_name_from_the_hub_cache(suite, tmp_path, offline_hub):  # noqa: F811
    folder, model = suite
    source = folder / "data" / "wds_shapes"
    files = {str(p.relative_to(source)): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    put_in_hf_cache(offline_hub, "clip-benchmark/wds_vtab-shapes", files, repo_type="dataset")
    local = mindclip.evaluate_suite(model, ["wds/shapes"], output_dir=str(tmp_path / "local"), progress=False,
                                    dataset_root=str(folder / "data" / "wds_{dataset_cleaned}"))
    records = mindclip.evaluate_suite(model, ["wds/vtab/shapes", "wds/vtab/uncached"], progress=False,
                                      output_dir=str(tmp_path / "hub"))
    assert records[0]["status"] == "ok" and records[0]["metrics"] == local[0]["metrics"]
    reason = records[1]["reason"]
    assert "wds/vtab/uncached (test split) is not in the Hugging Face cache" in reason
    assert "dataset repository clip-benchmark/wds_vtab-uncached" in reason
    assert "HF_HUB_OFFLINE is set" in reason and "HF_ENDPOINT" in reason and "--dataset_root DIR" in reason


def test_run_mindformer_suite_killed_and_rerun(suite, tmp_path):
    """Three local datasets through run_mindformer.py; the run is killed (SIGKILL) after its
    first dataset and rerun: finished datasets are not run again, the table equals an
    uninterrupted run's."""
    folder, model = suite
    root = str(folder / "data" / "wds_{dataset_cleaned}")
    out = tmp_path / "killed"
    args = [sys.executable, os.path.join(ROOT, "run_mindformer.py"), "--run_mode", "eval",
            "--config", os.path.join(ROOT, "configs", "eval", "openclip_suite.yaml"),
            "--model.name", f"local-dir:{folder / 'open_clip'}", "--model.pretrained", "null",
            "--datasets", "wds/shapes,wds/captions,wds/italian", "--dataset_root", root,
            "--eval.batch_size", "8", "--suite.progress_bar", "false"]
    proc = subprocess.Popen(args + ["--output_dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while not (results.exists() and results.read_text().count("\n") >= 1) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(line) for line in results.read_text().splitlines()]
    assert 1 <= len(first) < 3, "the run was not killed halfway"
    done = subprocess.run(args + ["--output_dir", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wds/captions" in done.stdout and "wrote" in done.stdout
    again = [json.loads(line) for line in results.read_text().splitlines()]
    assert again[:len(first)] == first  # not recomputed (same record, its timing included)
    whole = mindclip.evaluate_suite(model, ["wds/shapes", "wds/captions", "wds/italian"], progress=False,
                                    output_dir=str(tmp_path / "whole"), dataset_root=root, batch_size=8,
                                    model_name=f"local-dir:{folder / 'open_clip'}")
    assert [r["metrics"] for r in again] == [r["metrics"] for r in whole]
    assert (out / "results.csv").read_text() == (tmp_path / "whole" / "results.csv").read_text()


def _clip_benchmark_probe(train, test, val, tmp_path, monkeypatch, **options):
    """CLIP_benchmark's linear_probe.evaluate on given features: its featurizer is the identity
    and its CUDA calls run on the CPU (it asserts a GPU; nothing else in it needs one)."""
    from clip_benchmark.metrics import linear_probe

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self if a and a[0] == "cuda" else to(self, *a, **k))

    class Identity(torch.nn.Module):
        def encode_image(self, x):
            return x

    def loader(split):
        data = torch.utils.data.TensorDataset(torch.from_numpy(split[0]), torch.from_numpy(split[1]))
        return torch.utils.data.DataLoader(data, batch_size=64)

    return linear_probe.evaluate(Identity(), loader(train), loader(test), options.get("fewshot_k", -1), 64, 0,
                                 0.1, 10, "probe", 0, str(tmp_path / "features"), "cuda",
                                 val_dataloader=loader(val) if val else None, normalize=True, amp=False)


@pytest.mark.parametrize("with_validation", [False, True])
def test_linear_probe_equals_clip_benchmarks(tmp_path, monkeypatch, with_validation):
    """Same features, both heads: accuracies within 0.5 points on 2000 test samples, with and
    without the weight-decay search (whose pick differs where validation accuracy is flat:
    each side's initial weights and batch order are its own random draws)."""
    from mindclip.evaluation.linear_probe import linear_probe

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 24))

    def split(n):
        y = rng.integers(0, 8, n)
        x = centers[y] + rng.normal(scale=1.6, size=(n, 24))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y.astype(np.int64)

    train, test, val = split(600), split(2000), (split(150) if with_validation else None)
    theirs = _clip_benchmark_probe(train, test, val, tmp_path, monkeypatch)
    ours = linear_probe(train, test, val)
    for key in ("lp_acc1", "lp_acc5", "lp_mean_per_class_recall"):
        assert abs(ours[key] - theirs[key]) <= 0.005, (key, ours[key], theirs[key])
    assert (ours["weight_decay"] > 0) == (theirs["weight_decay"] > 0) == with_validation
    assert 0.5 < ours["lp_acc1"] < 0.95  # neither trivial nor chance


def test_linear_probe_through_the_suite(suite, tmp_path):
    folder, model = suite
    data = tmp_path / "data"
    write_classification(str(data / "wds_probe"), n=40)
    os.rename(data / "wds_probe" / "test", data / "wds_probe" / "train")
    write_classification(str(data / "wds_probe"), n=24, seed=5)
    record = mindclip.evaluate_suite(model, ["wds/probe"], output_dir=str(tmp_path / "out"), task="linear_probe",
                                     dataset_root=str(data / "wds_{dataset_cleaned}"), batch_size=8, progress=False,
                                     linear_probe={"epochs": 3})[0]
    assert record["status"] == "ok" and record["task"] == "linear_probe", record
    assert record["num_train"] == 40 and record["num_samples"] == 24 and record["metrics"]["epochs"] == 3
    assert record["score"] == record["metrics"]["lp_acc1"]
