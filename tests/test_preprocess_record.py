"""One preprocessing record per model, used by every path: an open_clip folder whose
``preprocess_cfg`` says squash + bilinear (as 48 of open_clip's tags do) is evaluated by
``Trainer.evaluate()`` exactly as CLIP_benchmark evaluates it with open_clip's own transform;
``save_pretrained`` keeps the record and the reverse converter writes it for open_clip."""
import json
import os

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mindclip
from conftest import build_openclip
from mindclip.convert.cli import main as convert_cli

RECORD = {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.3, 0.2], "interpolation": "bilinear",
          "resize_mode": "squash"}
CLASSES = ["red circle", "green bar", "blue square", "noise", "stripes"]


def _image(label: int, index: int, rng) -> Image.Image:
    """Non-square images (squash and crop see different pixels) that differ by class."""
    h, w = [(40, 90), (96, 44), (57, 33), (33, 80), (70, 70)][index]
    base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    base[..., label % 3] += np.uint8(120 + 20 * label)
    if label == 4:
        base[::4] = 255
    base[:, : w // 5] = 255 - base[:, : w // 5]  # edges a center crop cuts away
    return Image.fromarray(base)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("preprocess")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        os.makedirs(root / "images" / name)
        for i in range(5):
            _image(label, i, rng).save(root / "images" / name / f"{i}.png")
    reference = build_openclip("ViT-Tiny-8", seed=5)
    hub = root / "open_clip"
    os.makedirs(hub)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(hub / "open_clip_model.safetensors"))
    cfg = mindclip.get_model_config("ViT-Tiny-8").to_dict()
    with open(hub / "open_clip_config.json", "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": dict(RECORD, size=32)}, f)
    return root, reference


def _clip_benchmark(folder):
    from clip_benchmark.metrics.zeroshot_classification import evaluate
    from torchvision.datasets import ImageFolder

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    dataset = ImageFolder(str(folder.parent / "images"), transform=preprocess)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    return evaluate(model.eval(), loader, open_clip.get_tokenizer("ViT-B-32"), CLASSES,
                    ["a photo of a {c}."], "cpu", amp=False), dataset


def test_trainer_evaluate_equals_clip_benchmark_with_open_clips_transform(folders, tmp_path):
    from mindclip.config import load_config
    from mindclip.data.loader import build_source, eval_image_loader
    from mindclip.trainer import Trainer

    root, _ = folders
    expected, dataset = _clip_benchmark(root / "open_clip")
    eval_cfg = {"type": "imagefolder", "path": str(root / "images"), "class_names": CLASSES,
                "templates": ["a photo of a {}."]}
    cfg = load_config(None, {"output_dir": str(tmp_path / "out"), "model.name": f"local-dir:{root / 'open_clip'}",
                             **{f"eval_dataset.{k}": v for k, v in eval_cfg.items()},
                             "eval.batch_size": 8})
    trainer = Trainer(config=cfg)
    assert trainer.model.preprocess.resize_mode == "squash"
    metrics = trainer.evaluate()
    assert metrics["num_samples"] == 25
    assert abs(metrics["top1"] - expected["acc1"] * 100) < 1e-6
    assert abs(metrics["top5"] - expected["acc5"] * 100) < 1e-6
    assert abs(metrics["mean_per_class_top1"] - expected["mean_per_class_recall"] * 100) < 1e-6

    # the pixels the evaluation saw are open_clip's, which a default transform's are not
    model = trainer.model
    ours = np.concatenate([b for b, _ in eval_image_loader(build_source(eval_cfg), 32, 8,
                                                           preprocess=model.preprocess)])
    theirs = np.stack([dataset[i][0].numpy() for i in range(len(dataset))])
    assert np.abs(ours - theirs).max() <= 1e-5
    plain = np.concatenate([b for b, _ in eval_image_loader(build_source(eval_cfg), 32, 8)])
    assert np.abs(plain - theirs).max() > 0.1


def test_record_survives_save_pretrained_and_the_reverse_converter(folders, tmp_path):
    root, reference = folders
    model = mindclip.create_model(f"local-dir:{root / 'open_clip'}")
    model.save_pretrained(str(tmp_path / "saved"))
    again = mindclip.CLIPModel.from_pretrained(str(tmp_path / "saved"))
    assert again.preprocess == model.preprocess
    assert again.preprocess.to_dict() == dict(RECORD, fill_color=0)
    _, preprocess = mindclip.create_model_from_pretrained("ViT-Tiny-8", pretrained=str(tmp_path / "saved"))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 70, 3), dtype=np.uint8))
    theirs = open_clip.image_transform(32, is_train=False, mean=RECORD["mean"], std=RECORD["std"],
                                       interpolation="bilinear", resize_mode="squash")(img).numpy()
    np.testing.assert_allclose(preprocess(img), theirs, atol=1e-5)

    back = tmp_path / "back"
    assert convert_cli(["--reverse", "--mindspore_path", str(tmp_path / "saved"), "--torch_path", str(back)]) == 0
    with open(back / "open_clip_config.json") as f:
        written = json.load(f)["preprocess_cfg"]
    assert written == dict(RECORD, size=32, mode="RGB", fill_color=0)
    _, _, oc_preprocess = open_clip.create_model_and_transforms(f"local-dir:{back}")
    np.testing.assert_allclose(oc_preprocess(img).numpy(), theirs, atol=1e-6)


def test_invalid_records_are_refused_by_name():
    from mindclip.normalization import PreprocessCfg

    with pytest.raises(ValueError, match=r"resize_mode 'crop' is not one of \['shortest', 'squash', 'longest'\]"):
        PreprocessCfg(resize_mode="crop")
    with pytest.raises(ValueError, match="interpolation 'lanczos'"):
        PreprocessCfg.from_dict({"interpolation": "lanczos"})
