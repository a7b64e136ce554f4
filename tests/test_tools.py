"""Dataset helper tools and the loss-curve plot tool."""
import csv
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_webdataset  # noqa: E402
import plot_metrics  # noqa: E402
import split_flickr30k  # noqa: E402
from mindclip.data import build_source  # noqa: E402


def test_split_flickr30k(tmp_path):
    images = tmp_path / "flickr30k-images"
    images.mkdir()
    lines = []
    for i in range(20):
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(images / f"{i}.jpg")
        lines += [f"{i}.jpg#{k}\tcaption {i} {k}" for k in range(5)]
    (tmp_path / "results.token").write_text("\n".join(lines) + "\n")
    written = split_flickr30k.split_captions(str(tmp_path / "results.token"), str(images),
                                             str(tmp_path / "csv"), val=3, test=4)
    assert {k: v[1] for k, v in written.items()} == {"train": 13, "val": 3, "test": 4}
    sets = {}
    for split in ("train", "val", "test"):
        src = build_source({"type": "csv", "path": written[split][0]})
        assert all(len(c) == 5 for c in src.captions)
        sets[split] = set(src.images)
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"])
    assert len(sets["train"] | sets["val"] | sets["test"]) == 20


def test_make_webdataset_from_csv(tmp_path):
    rows = []
    for i in range(7):
        Image.new("RGB", (8, 8), (0, i * 30, 0)).save(tmp_path / f"{i}.jpg")
        rows.append([f"{i}.jpg", f"green {i}"])
    with open(tmp_path / "d.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    assert make_webdataset.main(["--csv", str(tmp_path / "d.tsv"), "--output", str(tmp_path / "shards"),
                                 "--samples_per_shard", "3"]) == 0
    shards = sorted(os.listdir(tmp_path / "shards"))
    assert shards == ["00000.tar", "00001.tar", "00002.tar"]
    src = build_source({"type": "webdataset", "path": str(tmp_path / "shards" / "{00000..00002}.tar")})
    assert len(src) == 7
    captions = [c[0] for _, c, _ in src.iterate(src.shards)]
    assert captions == [f"green {i}" for i in range(7)]


def test_plot_metrics(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"type": "train", "step": step, "loss": 5 - step, "lr": 1e-3 * step}) + "\n")
    out = str(tmp_path / "curves.png")
    assert plot_metrics.main([str(tmp_path / "metrics.jsonl"), "-o", out]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 100 and img.std() > 0


def test_benchmark_check_reads_the_readme_floors_and_flags_shortfalls():
    import benchmark

    by_kind = benchmark.readme_floors(os.path.join(ROOT, "README.md"))
    # the default run (ViT-B-32 and RN50) is guarded on every workload it measures, on each
    # processor kind the README has floors for
    assert by_kind
    for floors in by_kind.values():
        assert {("ViT-B-32", "image_encode"), ("ViT-B-32", "text_encode"),
                ("ViT-B-32", "train_step"), ("RN50", "image_encode")} <= set(floors)
    floors = by_kind["AMD AVX-512"]
    floor = floors[("ViT-B-32", "image_encode")]

    def result(pynative, graph, peer):
        return {"ViT-B-32": {"peer": "open_clip", "image_encode": {
            "PyNative": {"rate": pynative, "ratio": pynative / peer},
            "GRAPH": {"rate": graph, "ratio": graph / peer}}}}

    modes = ["PyNative", "GRAPH"]
    assert benchmark.check(result(10 * floor, 10 * floor, 10.0), floors, modes) == []
    low = benchmark.check(result(9.5 * floor, 10 * floor, 10.0), floors, modes)
    assert [m for _, _, m in low] == [f"ViT-B-32 image_encode PyNative: ratio {0.95 * floor:.2f} < {floor}"]
    slow_default = benchmark.check(result(20.0 * floor, 30.0 * floor, 10.0), floors, modes)
    assert [m for _, _, m in slow_default] == [
        f"ViT-B-32 image_encode: PyNative {20 * floor:.2f} < 0.9 x GRAPH {30 * floor:.2f}"]


@pytest.mark.parametrize("vendor, flags, kind", [
    ("GenuineIntel", "fpu sse2 avx2 avx512f avx512bw amx_tile", "Intel AVX-512"),
    ("AuthenticAMD", "fpu sse2 avx avx2 fma", "AMD AVX2"),
    ("AuthenticAMD", "fpu sse2 avx2 avx512f avx512_bf16", "AMD AVX-512"),
])
def test_benchmark_keys_floors_by_vendor_and_vector_width(tmp_path, vendor, flags, kind):
    import benchmark

    info = tmp_path / "cpuinfo"
    info.write_text("".join(f"processor\t: {i}\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\n"
                            for i in range(2)))
    assert benchmark.processor_kind(str(info)) == kind
    assert benchmark.processor_kind(str(tmp_path / "missing")) == "unknown"


@pytest.mark.parametrize("flag, message", [
    ("--images", "not a folder of images"),
    ("--peer_python", "not an executable Python interpreter"),
])
def test_benchmark_names_a_missing_path_in_one_error_line(tmp_path, capsys, flag, message):
    import benchmark

    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--section", "data", flag, missing])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f": error: {flag} {missing}: {message}")


def test_coca_fixture_script_names_the_transformers_it_needs(tmp_path, capsys):
    # the test extra has transformers 5, whose missing BeamSearchScorer open_clip's generate needs
    import make_coca_generation_fixtures
    import transformers

    with pytest.raises(SystemExit) as exit_info:
        make_coca_generation_fixtures.main(["--output", str(tmp_path / "fixtures")])
    assert exit_info.value.code == 2
    assert f"error: transformers {transformers.__version__} has no BeamSearchScorer" in capsys.readouterr().err
    assert not (tmp_path / "fixtures").exists()


@pytest.mark.parametrize("size", ["12", "0GB", "8 GB", "big"])
def test_benchmark_refuses_a_pool_size_mindspore_would_refuse_in_one_line(size, capsys):
    import benchmark

    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--section", "models", "--memory_init_size", size])
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and f"--memory_init_size {size!r}" in err[0]
