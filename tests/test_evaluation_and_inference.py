"""Metrics against independent implementations, the CIFAR-100 eval config end to end,
pipelines, predict, the Trainer API and MindIR export."""
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

import mindspore as ms
from conftest import ROOT

import run_mindformer
from mindclip import create_model, pipeline
from mindclip.evaluation import (CIFAR100_CLASSNAMES, CIFAR_TEMPLATES, imagenet_classnames,
                                 imagenet_templates)
from mindclip.evaluation.metrics import classification_metrics, retrieval_metrics


def first_positive_rank(scores, positives):
    """Straightforward ranking: sort descending, wrong items first among equal scores (ties
    count against the model), and report the 1-based position of the first positive."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j in positives))
    return next(pos for pos, j in enumerate(order, 1) if j in positives)


def test_retrieval_metrics_equal_straightforward_ranking():
    rng = np.random.default_rng(0)
    n_img, caps = 30, 5
    img = rng.standard_normal((n_img, 16))
    txt = np.repeat(img, caps, axis=0) * 0.3 + rng.standard_normal((n_img * caps, 16))
    # coarse rounding creates many exact ties in the similarities
    img, txt = np.round(img, 0).astype(np.float32), np.round(txt, 0).astype(np.float32)
    owner = np.repeat(np.arange(n_img), caps)
    got = retrieval_metrics(img, txt, owner)
    sims = img @ txt.T
    assert len(np.unique(sims)) < sims.size / 4  # ties are really there
    t2i = [first_positive_rank(sims[:, t], {owner[t]}) for t in range(len(txt))]
    i2t = [first_positive_rank(sims[i], set(np.flatnonzero(owner == i))) for i in range(n_img)]
    for name, ranks in (("text_to_image", t2i), ("image_to_text", i2t)):
        for k in (1, 5, 10):
            assert got[f"{name}_R@{k}"] == pytest.approx(100 * np.mean(np.array(ranks) <= k))
        assert got[f"{name}_mean_rank"] == pytest.approx(np.mean(ranks))
        assert got[f"{name}_median_rank"] == pytest.approx(np.median(ranks))
    assert got["mean_recall"] == pytest.approx(np.mean([got[f"{d}_R@{k}"] for d in ("text_to_image", "image_to_text") for k in (1, 5, 10)]))


def test_zero_shot_metrics_equal_straightforward_ranking():
    rng = np.random.default_rng(1)
    logits = np.round(rng.standard_normal((200, 12)), 1)
    labels = rng.integers(0, 12, 200)
    names = [f"c{i}" for i in range(12)]
    got = classification_metrics(logits, labels, names, (1, 5))
    ranks = np.array([first_positive_rank(row, {lab}) for row, lab in zip(logits, labels)])
    assert got["top1"] == pytest.approx(100 * np.mean(ranks == 1))
    assert got["top5"] == pytest.approx(100 * np.mean(ranks <= 5))
    for c, name in enumerate(names):
        assert got["per_class_top1"][name] == pytest.approx(100 * np.mean(ranks[labels == c] == 1))


def test_paper_class_names_and_templates():
    import open_clip.zero_shot_metadata as oc

    assert len(CIFAR100_CLASSNAMES) == 100 and len(set(CIFAR100_CLASSNAMES)) == 100
    assert len(CIFAR_TEMPLATES) == 18
    assert {"aquarium fish", "maple tree", "sweet pepper", "willow tree"} <= set(CIFAR100_CLASSNAMES)
    assert CIFAR_TEMPLATES[0] == "a photo of a {}." and CIFAR_TEMPLATES[-1] == "a photo of the big {}."
    assert imagenet_classnames() == list(oc.IMAGENET_CLASSNAMES)
    assert imagenet_templates() == [t("{}") for t in oc.OPENAI_IMAGENET_TEMPLATES]
    assert len(imagenet_templates()) == 80


def write_cifar100(root, n=40):
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    raw_names = [c.replace(" ", "_") for c in CIFAR100_CLASSNAMES]
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [c.encode() for c in raw_names]}, f, protocol=2)
    with open(root / "test", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                     b"fine_labels": [int(i) for i in rng.integers(0, 100, n)]}, f, protocol=2)
    return str(root)


def test_cifar100_eval_config_end_to_end(tiny_store, tmp_path, capsys):
    data = write_cifar100(tmp_path / "cifar-100-python")
    out = str(tmp_path / "out")
    config = os.path.join(ROOT, "configs", "clip", "run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml")
    code = run_mindformer.main(["--config", config, "--run_mode", "eval", "--eval_dataset_dir", data,
                                "--output_dir", out, "--model.name", "ViT-Tiny-8-quickgelu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert '"top1"' in printed and "eval_metrics.json" in printed
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_classes"] == 100 and metrics["num_templates"] == 18
    assert metrics["num_samples"] == 40 and 0 <= metrics["top1"] <= metrics["top5"] <= 100
    assert set(metrics["per_class_top1"]) <= set(CIFAR100_CLASSNAMES)
    assert os.path.isfile(os.path.join(out, "per_class_accuracy.png"))


@pytest.fixture(scope="module")
def tiny_model():
    ms.set_seed(0)
    return create_model("ViT-Tiny-8")


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40 + 3 * i, 50, 3), dtype=np.uint8) for i in range(n)]


def test_zero_shot_pipeline_shapes_order_topk_and_batching(tiny_model, tmp_path):
    labels = ["cat", "dog", "car", "tree", "boat"]
    pipe = pipeline("zero_shot_image_classification", model=tiny_model, candidate_labels=labels,
                    batch_size=4)
    imgs = _images(6)
    path = str(tmp_path / "x.png")
    Image.fromarray(imgs[0]).save(path)
    single = pipe(imgs[0])
    assert [set(r) for r in single] == [{"score", "label"}] * 5
    scores = [r["score"] for r in single]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    assert sorted(r["label"] for r in single) == sorted(labels)
    top2 = pipe(imgs[0], top_k=2)
    assert top2 == single[:2]
    batch = pipe(imgs)  # 6 images in batches of 4 (the last one padded)
    assert len(batch) == 6
    for one, many in zip([pipe(i) for i in imgs], batch):
        assert [r["label"] for r in one] == [r["label"] for r in many]
        np.testing.assert_allclose([r["score"] for r in one], [r["score"] for r in many], atol=1e-6)
    from_path = pipe(path)  # PNG round trip is lossless: same as the array
    np.testing.assert_allclose([r["score"] for r in from_path], scores, atol=1e-6)
    pil = pipe(Image.fromarray(imgs[0]), hypothesis_template="a picture of a {}.")
    assert len(pil) == 5


def test_feature_and_retrieval_pipelines(tiny_model, tmp_path):
    feats = pipeline("feature_extraction", model=tiny_model)(images=_images(3), texts=["a", "b c"])
    assert feats["image_embeds"].shape == (3, 32) and feats["text_embeds"].shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(feats["image_embeds"], axis=1), 1, atol=1e-5)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(_images(5, seed=3)):
        Image.fromarray(img).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"nope")
    search = pipeline("image_text_retrieval", model=tiny_model, images=str(folder), top_k=3)
    assert len(search.paths) == 5 and search.skipped == [str(folder / "broken.jpg")]
    hits = search("a photo of noise")
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    # scores are the cosine similarities of the feature pipeline's embeddings
    img_f = pipeline("feature_extraction", model=tiny_model)(images=[str(p) for p in sorted(folder.glob("*.png"))])
    txt_f = pipeline("feature_extraction", model=tiny_model)(texts="a photo of noise")
    best = int(np.argmax(img_f["image_embeds"] @ txt_f["text_embeds"][0]))
    assert hits[0]["image"] == str(sorted(folder.glob("*.png"))[best])


def test_trainer_evaluate_and_predict(tiny_store, tmp_path):
    from mindclip import Trainer

    root = tmp_path / "classes"
    for c, color in (("red_thing", (250, 10, 10)), ("blue thing", (10, 10, 250))):
        (root / c).mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (36, 36), color).save(root / c / f"{j}.png")
    trainer = Trainer(task="zero_shot_image_classification", model="ViT-Tiny-8",
                      eval_dataset=str(root), output_dir=str(tmp_path / "out"))
    metrics = trainer.evaluate()
    assert metrics["num_samples"] == 6 and set(metrics["per_class_top1"]) == {"red thing", "blue thing"}
    preds = trainer.predict(input_data=str(root / "red_thing" / "0.png"), top_k=1)
    assert len(preds) == 1 and preds[0]["label"] in {"red thing", "blue thing"}
    many = trainer.predict(input_data=str(root / "blue thing"), top_k=2)
    assert len(many) == 3 and all(len(p) == 2 for p in many)


def test_predict_cli(tiny_store, tmp_path, capsys):
    for i in range(2):
        Image.fromarray(_images(2)[i]).save(tmp_path / f"img{i}.png")
    config = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_cifar100_zero_shot.yaml")
    assert run_mindformer.main(["--config", config, "--run_mode", "predict", "--predict_data",
                                str(tmp_path), "--predict.top_k", "3"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(str(tmp_path))]
    assert len(lines) == 2 and all(l.count("(") == 3 for l in lines)


def test_mindir_export_round_trip(tiny_model, tmp_path):
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from export import export_encoders
    from mindspore import nn

    image_path, text_path = export_encoders(tiny_model, str(tmp_path), "tiny")
    image_net = nn.GraphCell(ms.load(image_path))
    text_net = nn.GraphCell(ms.load(text_path))
    rng = np.random.default_rng(4)
    from mindclip import get_tokenizer

    for batch in (1, 3):
        images = ms.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
        tokens = ms.Tensor(get_tokenizer()([f"text {i}" for i in range(batch)]))
        np.testing.assert_allclose(image_net(images).asnumpy(), tiny_model.encode_image(images).asnumpy(), atol=1e-5)
        np.testing.assert_allclose(text_net(tokens).asnumpy(), tiny_model.encode_text(tokens).asnumpy(), atol=1e-5)
