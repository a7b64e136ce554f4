"""Dataset readers and loaders on fixtures generated here (real image files, caption files in
the formats users bring, tar shards, CIFAR pickles)."""
import csv
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from mindclip.data import build_source, eval_image_loader, train_loader
from mindclip.data.classification import read_cifar100, read_image_folder
from mindclip.data.loader import epoch_order
from mindclip.data.transforms import CROP_ATTEMPTS, Augment, apply_color, apply_crop, augment_draws
from mindclip.data.webdataset import expand_pattern
from mindclip.tokenizer import CLIPTokenizer

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def make_image(path, i, size=(40, 30), mode="RGB", fmt=None):
    """A flat-colour image whose colour encodes ``i`` (so pairing can be checked)."""
    img = Image.new("RGB", size, COLORS[i % len(COLORS)])
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def colour_index(chw):
    """Recover the colour index from a normalised CHW image."""
    mean = np.array([0.48145466, 0.4578275, 0.40821073]) * 255
    std = np.array([0.26862954, 0.26130258, 0.27577711]) * 255
    rgb = chw.reshape(3, -1).mean(axis=1) * std + mean
    return int(np.argmin([np.abs(rgb - np.array(c)).sum() for c in COLORS]))


@pytest.fixture()
def flickr8k(tmp_path):
    root = tmp_path / "flickr8k"
    (root / "Flickr8k_Dataset" / "Flicker8k_Dataset").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    names = [f"{1000 + i}_abc.jpg" for i in range(6)]
    for i, n in enumerate(names):
        make_image(root / "Flickr8k_Dataset" / "Flicker8k_Dataset" / n, i)
    with open(root / "Flickr8k_text" / "Flickr8k.token.txt", "w") as f:
        for i, n in enumerate(names):
            for k in range(5):
                f.write(f"{n}#{k}\tcolour {i} caption {k} .\n")
    (root / "Flickr8k_text" / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "Flickr8k_text" / "Flickr_8k.devImages.txt").write_text(names[4] + "\n")
    (root / "Flickr8k_text" / "Flickr_8k.testImages.txt").write_text(names[5] + "\n")
    return str(root)


def test_flickr8k_splits_and_pairing(flickr8k):
    train = build_source({"type": "flickr8k", "path": flickr8k, "split": "train"})
    test = build_source({"type": "flickr8k", "path": flickr8k, "split": "test"})
    assert len(train) == 4 and len(test) == 1
    assert all(len(c) == 5 for c in train.captions)
    assert train.captions[2][3] == "colour 2 caption 3 ."
    assert test.images[0].endswith("1005_abc.jpg")
    with pytest.raises(FileNotFoundError, match="Flickr8k_text/Flickr8k.token.txt"):
        build_source({"type": "flickr8k", "path": flickr8k + "/missing"})


def test_json_csv_coco_yfcc_readers(tmp_path):
    paths = [make_image(tmp_path / f"img{i}.png", i) for i in range(3)]
    (tmp_path / "en_train.json").write_text(json.dumps(
        [{"image": f"img{i}.png", "caption": [f"c{i}a", f"c{i}b"]} for i in range(3)]))
    src = build_source({"type": "json", "path": str(tmp_path / "en_train.json")})
    assert src.images == [str(p) for p in paths] and src.captions[1] == ["c1a", "c1b"]

    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "filepath", "title"])
        for i in range(3):
            for k in range(2):
                w.writerow([i, f"img{i}.png", f"title {i}.{k}"])
    src = build_source({"type": "csv", "path": str(tmp_path / "train.csv"), "csv_separator": ","})
    assert len(src) == 3 and src.captions[2] == ["title 2.0", "title 2.1"]
    with pytest.raises(ValueError, match="no column 'caption'.*columns are"):
        build_source({"type": "csv", "path": str(tmp_path / "train.csv"), "csv_separator": ",",
                      "csv_caption_key": "caption"})

    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    for i in range(3):
        make_image(tmp_path / "train2017" / f"{i:012d}.jpg", i)
    coco = {"images": [{"id": 10 + i, "file_name": f"{i:012d}.jpg"} for i in range(3)],
            "annotations": [{"id": k, "image_id": 10 + k % 3, "caption": f"coco {k % 3}-{k}"}
                            for k in range(9)]}
    (tmp_path / "annotations" / "captions_train2017.json").write_text(json.dumps(coco))
    src = build_source({"type": "coco", "path": str(tmp_path), "split": "train"})
    assert len(src) == 3 and src.captions[1] == ["coco 1-1", "coco 1-4", "coco 1-7"]
    assert src.images[1].endswith("train2017/000000000001.jpg")

    (tmp_path / "yfcc.jsonl").write_text("\n".join(
        json.dumps({"filename": f"img{i}.png", "caption": f"y{i}"}) for i in range(3)))
    src = build_source({"type": "yfcc", "path": str(tmp_path / "yfcc.jsonl")})
    assert list(src.captions) == [["y0"], ["y1"], ["y2"]]


def write_shards(tmp_path, n_shards=3, per_shard=4, caption=lambda i: f"colour {i % len(COLORS)}"):
    for s in range(n_shards):
        with tarfile.open(tmp_path / f"shard-{s:05d}.tar", "w") as tar:
            for j in range(per_shard):
                i = s * per_shard + j
                buf = io.BytesIO()
                Image.new("RGB", (20, 20), COLORS[i % len(COLORS)]).save(buf, "JPEG")
                for name, data in ((f"{i:06d}.jpg", buf.getvalue()),
                                   (f"{i:06d}.txt", caption(i).encode()),
                                   (f"{i:06d}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(tmp_path / ("shard-{00000..%05d}.tar" % (n_shards - 1)))


def test_webdataset_shards(tmp_path):
    pattern = write_shards(tmp_path)
    assert len(expand_pattern(pattern)) == 3
    src = build_source({"type": "webdataset", "path": pattern, "train_num_samples": 12})
    loader = train_loader(src, CLIPTokenizer(), 32, batch_size=4, num_workers=2)
    seen = 0
    tok = CLIPTokenizer()
    for images, tokens in loader:
        assert images.shape == (4, 3, 32, 32)
        for img, row in zip(images, tokens):  # caption matches the image colour
            assert tok.decode(row) == f"colour {colour_index(img)}"
        seen += len(images)
    assert seen == 12 and loader.skipped == 0
    with pytest.raises(FileNotFoundError, match="shards not found"):
        build_source({"type": "webdataset", "path": str(tmp_path / "nope-{0..2}.tar")})


def test_webdataset_resampled_and_rank_split(tmp_path):
    pattern = write_shards(tmp_path, n_shards=4, per_shard=3)
    src = build_source({"type": "webdataset", "path": pattern, "train_num_samples": 12})
    tok = CLIPTokenizer()
    per_rank = [sum(len(b[0]) for b in train_loader(src, tok, 32, 3, rank=r, world=2)) for r in (0, 1)]
    assert per_rank == [6, 6]
    src = build_source({"type": "webdataset", "path": pattern, "train_num_samples": 30, "resampled": True})
    assert sum(len(b[0]) for b in train_loader(src, tok, 32, 5)) == 30


def write_cifar100_python(root, n=12, payload=None):
    root.mkdir(parents=True, exist_ok=True)
    names = [f"class_{i}" for i in range(100)]
    names[1] = "aquarium_fish"
    meta = {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [b"x"] * 20}
    rng = np.random.default_rng(0)
    data = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            b"fine_labels": [int(i % 100) for i in range(n)], b"coarse_labels": [0] * n,
            b"filenames": [f"f{i}.png".encode() for i in range(n)]}
    if payload is not None:
        data[b"extra"] = payload
    for name, obj in (("meta", meta), ("test", data), ("train", data)):
        with open(root / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return data


def test_cifar100_python_and_binary(tmp_path):
    data = write_cifar100_python(tmp_path / "cifar-100-python")
    src = read_cifar100(str(tmp_path / "cifar-100-python"), split="test")
    assert len(src) == 12 and len(src.class_names) == 100
    assert src.class_names[1] == "aquarium fish"
    np.testing.assert_array_equal(src.images[3], data[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert src.labels[5] == 5
    binroot = tmp_path / "cifar-100-binary"
    binroot.mkdir()
    records = np.concatenate([np.zeros((12, 1), np.uint8), np.arange(12, dtype=np.uint8)[:, None],
                              data[b"data"]], axis=1)
    records.tofile(binroot / "test.bin")
    (binroot / "fine_label_names.txt").write_text("\n".join(f"name_{i}" for i in range(100)))
    bsrc = read_cifar100(str(binroot), split="test")
    assert bsrc.labels == list(range(12)) and bsrc.class_names[7] == "name 7"
    np.testing.assert_array_equal(bsrc.images[3], src.images[3])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + _Exploit.marker,))


def test_cifar_reader_refuses_code_executing_pickle(tmp_path):
    _Exploit.marker = str(tmp_path / "pwned")
    write_cifar100_python(tmp_path / "evil", payload=_Exploit())
    with pytest.raises(ValueError, match="refusing to unpickle posix.system|refusing to unpickle os.system"):
        read_cifar100(str(tmp_path / "evil"), split="test")
    assert not os.path.exists(_Exploit.marker)


def test_imagefolder_and_corrupt_images_are_skipped_and_counted(tmp_path):
    root = tmp_path / "folder"
    for c, name in enumerate(["golden_retriever", "tabby cat"]):
        (root / name).mkdir(parents=True)
        for j in range(3):
            make_image(root / name / f"{j}.png", c)
    make_image(root / "tabby cat" / "gray.jpg", 1, mode="L")
    make_image(root / "tabby cat" / "cmyk.jpg", 1, mode="CMYK")
    make_image(root / "tabby cat" / "rgba.png", 1, mode="RGBA")
    (root / "tabby cat" / "broken.jpg").write_bytes(b"not an image at all")
    good = (root / "golden_retriever" / "0.png").read_bytes()
    (root / "golden_retriever" / "truncated.png").write_bytes(good[: len(good) // 2])
    src = read_image_folder(str(root))
    assert src.class_names == ["golden retriever", "tabby cat"]
    assert len(src) == 11
    loader = eval_image_loader(src, 32, batch_size=4)
    labels = np.concatenate([lab for _, lab in loader])
    assert loader.skipped == 2
    assert len(labels) == 9 and sorted(labels.tolist()) == [0] * 3 + [1] * 6


def test_training_epoch_survives_corrupt_image(tmp_path):
    items = []
    for i in range(9):
        make_image(tmp_path / f"{i}.jpg", i)
        items.append({"image": f"{i}.jpg", "caption": [f"colour {i % len(COLORS)}"]})
    (tmp_path / "3.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "train.json").write_text(json.dumps(items))
    src = build_source({"type": "json", "path": str(tmp_path / "train.json")})
    loader = train_loader(src, CLIPTokenizer(), 32, batch_size=4, num_workers=2, seed=3)
    tok = CLIPTokenizer()
    rows = 0
    for images, tokens in loader:
        rows += len(images)
        for img, row in zip(images, tokens):
            assert tok.decode(row) == f"colour {colour_index(img)}"
    assert rows == 8 and loader.skipped == 1  # 9 - 1 unreadable = 8 = two full batches


def test_sharding_is_disjoint_and_covers(tmp_path):
    n, world = 103, 2
    parts = [set(epoch_order(n, 5, 1, True, r, world, False).tolist()) for r in range(world)]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(n))
    train_parts = [epoch_order(n, 5, 1, True, r, world, True) for r in range(world)]
    assert len(train_parts[0]) == len(train_parts[1]) == 51
    assert not set(train_parts[0]) & set(train_parts[1])


def json_captions(tmp_path, n, prefixes):
    """A JSON caption source of ``n`` 64x48 images, image ``i`` captioned ``"<prefix> i"`` for
    each prefix."""
    items = []
    for i in range(n):
        make_image(tmp_path / f"{i}.jpg", i, size=(64, 48))
        items.append({"image": f"{i}.jpg", "caption": [f"{p} {i}" for p in prefixes]})
    (tmp_path / "t.json").write_text(json.dumps(items))
    return build_source({"type": "json", "path": str(tmp_path / "t.json")})


def test_loader_is_deterministic_and_epochs_differ(tmp_path):
    src = json_captions(tmp_path, 8, ("a", "b", "c"))
    tok = CLIPTokenizer()
    run = lambda epoch, w: [t for _, t in train_loader(src, tok, 32, 4, epoch=epoch, seed=1, num_workers=w)]  # noqa
    a, b, c = run(0, 1), run(0, 2), run(1, 2)
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    resumed = [t for _, t in train_loader(src, tok, 32, 4, epoch=0, seed=1, skip_batches=1)]
    np.testing.assert_array_equal(resumed[0], a[1])


def test_loader_queues_are_sized_by_row_bytes_and_the_global_setting_is_restored(tmp_path, monkeypatch):
    """The pipeline ends at rows (the loader stacks batches): a loader starts it with queues
    holding ~_QUEUED_ROW_BYTES of rows per stage (2 to 16), then puts the process-wide
    prefetch size back; batches are the same whatever the queues hold."""
    import mindspore.dataset as ds
    from mindclip.data import loader as loader_module

    src = json_captions(tmp_path, 9, ("a", "b", "c"))
    default = ds.config.get_prefetch_size()
    seen = []
    real_set = ds.config.set_prefetch_size
    monkeypatch.setattr(ds.config, "set_prefetch_size", lambda n: (seen.append(n), real_set(n)))
    row_bytes = 3 * 32 * 32 * 4
    outputs = []
    for budget, expected in ((row_bytes * 5, 5), (row_bytes, 2), (row_bytes * 100, default)):
        seen.clear()
        monkeypatch.setattr(loader_module, "_QUEUED_ROW_BYTES", budget)
        batches = list(train_loader(src, CLIPTokenizer(), 32, 4, seed=1))
        assert [b[0].shape for b in batches] == [(4, 3, 32, 32)] * 2  # the 9th row: dropped
        assert [b[1].shape for b in batches] == [(4, 77)] * 2
        assert seen == [expected, default] and ds.config.get_prefetch_size() == default
        outputs.append(batches)
    for batches in outputs[1:]:
        for got, first in zip(batches, outputs[0]):
            np.testing.assert_array_equal(got[0], first[0])
            np.testing.assert_array_equal(got[1], first[1])


def test_loader_batches_keep_text_columns_whole(tmp_path):
    """A builder column of strings (a custom processor's) comes out whole in every row of a
    batch, also when the batch's first row is the shortest."""
    from mindclip.data.batch import SampleBuilder

    captions = ["a", "a longer caption", "an even longer caption than that", "bc"]
    items = []
    for i, caption in enumerate(captions):
        make_image(tmp_path / f"{i}.jpg", i, size=(64, 48))
        items.append({"image": f"{i}.jpg", "caption": [caption]})
    (tmp_path / "t.json").write_text(json.dumps(items))
    src = build_source({"type": "json", "path": str(tmp_path / "t.json")})
    builder = SampleBuilder(lambda caption: np.array([caption]), columns=("caption",))
    (images, got), = list(train_loader(src, builder, 32, 4, seed=2, shuffle=False))
    assert images.shape == (4, 3, 32, 32) and [str(c) for c in got.reshape(-1)] == captions
    # rows of one column that differ in shape are refused, never broadcast into the batch
    ragged = SampleBuilder(lambda texts: np.zeros((1, max(1, 17 - len(texts[0]))), np.int32),
                           columns=("ids",))
    with pytest.raises(ValueError, match=r"loader column 'ids': a row of shape \(1,\) in a batch of rows "
                                         r"shaped \(16,\)"):
        list(train_loader(src, ragged, 32, 4, seed=2, shuffle=False))


def test_training_batches_normalise_with_the_models_preprocessing_record(tmp_path):
    """Training normalises with the record's mean and std (MobileCLIP's 0 / 1, say) and, as
    open_clip's training transform, crops and resizes alike whatever its resize mode."""
    from mindclip.normalization import OPENAI_MEAN, OPENAI_STD, PreprocessCfg

    src = json_captions(tmp_path, 4, ("a",))
    record = PreprocessCfg(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize_mode="squash")
    ours = np.concatenate([b for b, _ in train_loader(src, CLIPTokenizer(), 32, 4, seed=3, preprocess=record)])
    plain = np.concatenate([b for b, _ in train_loader(src, CLIPTokenizer(), 32, 4, seed=3)])
    mean, std = np.reshape(OPENAI_MEAN, (1, 3, 1, 1)), np.reshape(OPENAI_STD, (1, 3, 1, 1))
    np.testing.assert_allclose(ours, plain * std + mean, atol=1e-5)
    assert 0.0 <= ours.min() and ours.max() <= 1.0


def test_random_resized_crop_rule():
    img = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop = apply_crop(img, augment_draws(rng, Augment()))
        area = crop.shape[0] * crop.shape[1] / (100 * 80)
        assert 0.85 <= area <= 1.0 and 3 / 4 - 0.05 <= crop.shape[1] / crop.shape[0] <= 4 / 3 + 0.05


def test_eval_pipeline_matches_pil_reference(tmp_path):
    """The C++ eval pipeline (PIL-cubic resize + torchvision's crop offsets) equals the PIL
    reference transform (open_clip's) to float rounding, on several aspect ratios."""
    from skimage import data

    from mindclip.data import image_transform
    from mindclip.data.base import ImageTextSource

    arrays = [data.astronaut(), data.coffee(), data.rocket(), data.camera(), data.chelsea(),
              data.astronaut()[:, :301], data.coffee()[:203]]
    paths = []
    for i, arr in enumerate(arrays):
        p = str(tmp_path / f"{i}.png")
        Image.fromarray(arr).save(p)
        paths.append(p)
    src = ImageTextSource(paths, [["x"]] * len(paths))
    for size in (224, 64):
        batch = np.concatenate([b for b, _ in eval_image_loader(src, size, 3)])
        ref = np.stack([image_transform(size)(p) for p in paths])
        assert np.abs(batch - ref).max() <= 1e-5


def test_color_augmentation_is_seeded_and_bounded(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    draws = augment_draws(np.random.default_rng(1), Augment(color_jitter=0.4, grayscale=1.0))
    color = draws[CROP_ATTEMPTS]
    assert np.all(np.abs(color[:3] - 1) <= 0.4) and color[3] == 1.0
    out = apply_color(img, draws)
    assert out.dtype == np.uint8 and np.array_equal(out[..., 0], out[..., 1])  # grayscale
    identity = augment_draws(np.random.default_rng(1), Augment())
    np.testing.assert_array_equal(apply_color(img, identity), img)
    src = json_captions(tmp_path, 8, ("c",))
    aug = Augment(color_jitter=0.3, grayscale=0.5)
    run = lambda: np.concatenate([b for b, _ in train_loader(src, CLIPTokenizer(), 32, 4, seed=2, augment=aug)])  # noqa
    first = run()
    np.testing.assert_array_equal(first, run())
    plain = np.concatenate([b for b, _ in train_loader(src, CLIPTokenizer(), 32, 4, seed=2)])
    assert not np.array_equal(first, plain)


def test_run_clip_jsonl_and_csv_columns(tmp_path):
    """Hugging Face run_clip.py's own caption files: JSON lines or CSV with image_path/caption."""
    rows = [{"image_path": f"img{i % 3}.jpg", "caption": f"caption {i}"} for i in range(6)]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    src = build_source({"type": "jsonl", "path": str(tmp_path / "train.json")})
    assert len(src) == 3 and src.captions[0] == ["caption 0", "caption 3"]
    assert src.images[1] == str(tmp_path / "img1.jpg")
    (tmp_path / "train.csv").write_text("image_path,caption\n" + "".join(
        f"{r['image_path']},{r['caption']}\n" for r in rows))
    csv_src = build_source({"type": "csv", "path": str(tmp_path / "train.csv"), "csv_separator": ",",
                            "csv_img_key": "image_path", "csv_caption_key": "caption"})
    assert csv_src.captions == src.captions and csv_src.images == src.images
    (tmp_path / "bad.json").write_text('{"image": "x.jpg"}\n')
    with pytest.raises(ValueError, match="bad.json:1: expected"):
        build_source({"type": "jsonl", "path": str(tmp_path / "bad.json")})


def test_yfcc_meta_file_is_indexed_once_read_by_seeking_and_skips_empty_captions(tmp_path, monkeypatch):
    from mindclip.data import indexed

    rows = [{"filename": f"/img{i}.png", "caption": c} for i, c in
            enumerate(["a red one", ["first", "second"], "", "a blue one", "  ", "last"])]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "")  # a blank line is not a sample
    meta = tmp_path / "yfcc.json"
    meta.write_text("\n".join(lines) + "\n")
    for i in range(len(rows)):
        make_image(tmp_path / f"img{i}.png", i)
    src = build_source({"type": "yfcc", "path": str(meta)})
    assert len(src) == 6 and src.images[3] == str(tmp_path / "img3.png")
    assert src.captions[1] == ["first", "second"] and src.captions[2] == [] == src.captions[4]
    assert os.path.isfile(str(meta) + ".index.npz")
    # the cached index is used while the file is unchanged, rebuilt when it changes
    monkeypatch.setattr(indexed, "_scan_offsets", lambda path: pytest.fail("re-scanned"))
    assert len(build_source({"type": "yfcc", "path": str(meta)})) == 6
    monkeypatch.undo()
    with open(meta, "a") as f:
        f.write(json.dumps({"filename": "img0.png", "caption": "appended"}) + "\n")
    os.utime(meta, ns=(1, 1))
    again = build_source({"type": "yfcc", "path": str(meta)})
    assert len(again) == 7 and again.captions[6] == ["appended"]
    loader = train_loader(src, CLIPTokenizer(), 32, 2, seed=1)
    delivered = sum(len(b[0]) for b in loader)
    loader.drain()
    assert delivered == 4 and loader.skipped == 2
    assert sorted(loader.unreadable) == [str(tmp_path / "img2.png") + " (empty caption)",
                                         str(tmp_path / "img4.png") + " (empty caption)"]


def test_imagenet_meta_reader_and_resize_then_crop(tmp_path):
    from mindclip.data.transforms import _normalizer, center_crop, resize_shortest
    from mindclip.normalization import IMAGENET_MEAN, IMAGENET_STD, PreprocessCfg

    rng = np.random.default_rng(0)
    (tmp_path / "val").mkdir()
    lines = []
    for i in range(4):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        Image.fromarray(rng.integers(0, 255, (50 + 7 * i, 61, 3), dtype=np.uint8)).save(
            tmp_path / "val" / name, format="PNG")
        lines.append(json.dumps({"filename": name, "label": i % 2, "label_name": ["tench", "goldfish"][i % 2]}))
    (tmp_path / "val_official.json").write_text("\n".join(lines) + "\n")
    src = build_source({"type": "imagenet_meta", "path": str(tmp_path / "val_official.json"),
                        "image_root": str(tmp_path / "val")})
    assert src.class_names == ["tench", "goldfish"] and src.labels == [0, 1, 0, 1]
    batches = list(eval_image_loader(src, 32, 4, resize_size=40,
                                     preprocess=PreprocessCfg(IMAGENET_MEAN, IMAGENET_STD)))
    normalize = _normalizer(IMAGENET_MEAN, IMAGENET_STD)
    ref = np.stack([normalize(np.asarray(center_crop(resize_shortest(Image.open(p).convert("RGB"), 40), 32)))
                    for p in src.images])
    assert np.abs(batches[0][0] - ref).max() <= 1e-5


def test_line_index_is_exact_across_read_chunks(tmp_path, monkeypatch):
    from mindclip.data import indexed

    text = "".join(json.dumps({"filename": "x" * (i % 5), "caption": "é" * i}) + ("\n" * (1 + i % 3))
                   for i in range(40))
    path = tmp_path / "m.json"
    path.write_bytes(text.encode("utf-8"))
    data = text.encode("utf-8")
    expected = [i for i in range(len(data)) if (i == 0 or data[i - 1:i] == b"\n") and data[i:i + 1] != b"\n"]
    for chunk in (3, 7, 64, 1 << 20):
        monkeypatch.setattr(indexed, "_CHUNK", chunk)
        offsets = indexed._non_blank(str(path), indexed._scan_offsets(str(path)))
        assert offsets.tolist() == expected, chunk


def test_digits_are_scikit_learns_without_importing_it():
    """The demo's digits come from the file scikit-learn ships, read without importing
    scikit-learn (about 1 s of every demo run's start-up): the same pixels and labels as
    ``load_digits``, split 1442 / 355."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from mindclip.data.classification import _digits_arrays, read_digits

    images, targets = _digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(targets, reference.target)
    train, test = read_digits("train"), read_digits("test")
    assert (len(train.images), len(test.images)) == (1442, 355)
    probe = ("import sys; from mindclip.data.classification import read_digits; "
             "read_digits('train'); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
