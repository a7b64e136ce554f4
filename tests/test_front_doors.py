"""The front doors users bring from MindFormers and Hugging Face: MindFormers' CLIP Python
examples line by line (mindformers -> mindclip, local files, a tiny architecture installed into
a temporary weight store), the weight store's refusal to run a name without weights,
save_pretrained / from_pretrained for every family, one-line CLI errors, and exact, named
reports of unreadable training images."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, build_openclip

import mindclip
import run_mindformer
from mindclip.convert.cli import main as convert_cli
from mindclip.training.logger import read_metrics

TINY = "ViT-Tiny-8-quickgelu"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "home"))
    return str(tmp_path / "home")


def _flickr8k(root, n=8):
    images = root / "Flickr8k_Dataset" / "Flicker8k_Dataset"
    images.mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    names = [f"{100 + i}_x.jpg" for i in range(n)]
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30)]
    with open(root / "Flickr8k_text" / "Flickr8k.token.txt", "w") as f:
        for i, name in enumerate(names):
            Image.new("RGB", (40, 30), colours[i % 4]).save(images / name)
            f.writelines(f"{name}#{k}\ta {['red', 'green', 'blue', 'yellow'][i % 4]} square {k} .\n"
                         for k in range(5))
    for split, part in (("train", names[:6]), ("dev", names[6:7]), ("test", names[7:])):
        (root / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").write_text("\n".join(part) + "\n")
    return str(root)


def test_mindformers_clip_examples(store, tmp_path):
    """docs/model_cards/clip.md of MindFormers 1.x, every Python line, with `mindformers`
    replaced by `mindclip` and clip_vit_b_32 by a tiny architecture installed locally."""
    from test_data import write_cifar100_python

    # the one-time conversion into the weight store (MindFormers: convert_weight.py)
    torch.save(build_openclip(TINY, seed=5).state_dict(), tmp_path / "tiny.pt")
    assert convert_cli(["--torch_path", str(tmp_path / "tiny.pt"), "--model", TINY,
                        "--install", TINY]) == 0
    assert os.path.isfile(os.path.join(store, TINY, "mindclip_model.safetensors"))

    # - Model调用接口
    from mindclip import CLIPModel, CLIPConfig

    names = CLIPModel.show_support_list()
    assert {"clip_vit_b_32", "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14@336"} <= set(names)
    model = CLIPModel.from_pretrained(TINY)
    config = CLIPConfig.from_pretrained(TINY)
    model = CLIPModel(config)
    assert isinstance(model, CLIPModel) and config == mindclip.get_model_config(TINY)

    # - Trainer接口开启训练/评估/推理
    from mindclip.trainer import Trainer
    from mindclip.tools.image_tools import load_image

    out = str(tmp_path / "run")
    small = {"runner": {"batch_size": 2, "epochs": 1, "progress_bar": False}}  # CPU-sized
    trainer = Trainer(small, task='contrastive_language_image_pretrain', model=TINY,
                      train_dataset=_flickr8k(tmp_path / "Flickr8k"), output_dir=out)
    trainer.train()
    write_cifar100_python(tmp_path / "cifar-100-python")
    trainer = Trainer(task='zero_shot_image_classification', model=TINY,
                      eval_dataset=str(tmp_path / "cifar-100-python"), output_dir=out)
    Image.new("RGB", (64, 64), (230, 200, 20)).save(tmp_path / "sunflower.png")
    img = load_image(str(tmp_path / "sunflower.png"))
    # 方式1: the run's own trained weights (checkpoint=True)
    metrics = trainer.evaluate(eval_checkpoint=True)
    predict_result = trainer.predict(predict_checkpoint=True, input_data=img, top_k=3)
    assert metrics["num_classes"] == 100 and len(predict_result) == 3
    trained = mindclip.create_model(pretrained=out)
    for k, p in trainer.model.parameters_dict().items():
        np.testing.assert_array_equal(p.asnumpy(), trained.parameters_dict()[k].asnumpy(), err_msg=k)
    # 方式2: the installed weights (MindFormers downloads them; we load them from the store)
    trainer = Trainer(task='zero_shot_image_classification', model=TINY,
                      eval_dataset=str(tmp_path / "cifar-100-python"), output_dir=str(tmp_path / "r2"))
    trainer.evaluate()
    predict_result = trainer.predict(input_data=img, top_k=3)
    installed = CLIPModel.from_pretrained(TINY)
    for k, p in trainer.model.parameters_dict().items():
        np.testing.assert_array_equal(p.asnumpy(), installed.parameters_dict()[k].asnumpy(), err_msg=k)

    # - pipeline接口开启快速推理
    from mindclip import pipeline

    classifier = pipeline("zero_shot_image_classification", model=TINY,
                          candidate_labels=["sunflower", "tree", "dog", "cat", "toy"])
    result = classifier(img)
    assert sorted(r["label"] for r in result) == ["cat", "dog", "sunflower", "toy", "tree"]
    assert abs(sum(r["score"] for r in result) - 1) < 1e-5


def test_name_without_weights_is_an_error_with_the_command(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))  # offline (conftest), nothing cached
    with pytest.raises(ConnectionError) as err:
        mindclip.pipeline("zero_shot_image_classification", model="clip_vit_b_32",
                          candidate_labels=["a", "b"])
    text = str(err.value)
    assert "clip_vit_b_32 (ViT-B-32-quickgelu pretrained='openai') is not in the weight store" in text
    assert store in text and "timm/vit_base_patch32_clip_224.openai" in text
    assert "python tools/convert_weight.py --torch_path ViT-B-32.pt --allow_torchscript " \
           "--install clip_vit_b_32" in text
    with pytest.raises(ConnectionError, match="--install clip_vit_b_16"):
        mindclip.CLIPModel.from_pretrained("clip_vit_b_16")
    with pytest.raises(FileNotFoundError, match="no weights installed for 'my_finetune'"):
        mindclip.create_model("ViT-Tiny-8", pretrained="my_finetune")
    # explicit random initialisation stays available
    assert isinstance(mindclip.create_model("ViT-Tiny-8"), mindclip.CLIPModel)


def test_load_image_url_without_network_is_a_clear_error():
    with pytest.raises(ConnectionError, match="download the image elsewhere"):
        mindclip.load_image("http://127.0.0.1:9/sunflower.png", timeout=2)


def test_save_pretrained_round_trip_every_family(tmp_path):
    from test_dual_encoder import _train_tokenizer

    tok_dir = str(tmp_path / "tok")
    _train_tokenizer("bert", tok_dir)
    init = str(tmp_path / "dual_init")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import init_dual_encoder

    assert init_dual_encoder.main(["--output", init, "--tokenizer", tok_dir]) == 0
    models = {"clip": mindclip.create_model("ViT-Tiny-8"),
              "dual_encoder": mindclip.DualEncoderModel.from_pretrained(init)}
    for family, model in models.items():
        folder = str(tmp_path / f"saved_{family}")
        model.save_pretrained(folder)
        assert {"mindclip_model.safetensors", "config.json"} <= set(os.listdir(folder))
        again = type(model).from_pretrained(folder)
        assert again.family == family and again.config == model.config
        for k, p in model.parameters_dict().items():
            np.testing.assert_array_equal(p.asnumpy(), again.parameters_dict()[k].asnumpy(), err_msg=k)
        ours, theirs = mindclip.get_tokenizer(model)(["a cat"]), mindclip.get_tokenizer(folder)(["a cat"])
        np.testing.assert_array_equal(ours if family == "clip" else ours["input_ids"],
                                      theirs if family == "clip" else theirs["input_ids"])
        assert type(again.config).from_pretrained(folder) == model.config
    with pytest.raises(ValueError, match="not a CLIPModel"):
        mindclip.CLIPModel.from_pretrained(str(tmp_path / "saved_dual_encoder"))


def _cli(args, **kwargs):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_mindformer.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, **kwargs)


def test_cli_user_errors_are_one_line(tmp_path, store):
    demo = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")
    cifar = os.path.join(ROOT, "configs", "clip", "run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml")
    bad_pickle = tmp_path / "evil.ckpt.pt"
    bad_pickle.write_bytes(b"\x80\x04cos\nsystem\n(S'echo hi'\ntR.")
    other_arch = tmp_path / "rn.safetensors"
    mindclip.Trainer(config={"model": {"name": "RN-Tiny"}}).save_model(str(other_arch))
    cases = {
        "missing dataset": (["--config", demo, "--train_dataset.type", "json",
                             "--train_dataset.path", str(tmp_path / "none.json")], "not found"),
        "unknown model": (["--config", demo, "--model.name", "ViT-Q-99"], "unknown model 'ViT-Q-99'"),
        "missing checkpoint": (["--config", demo, "--load_checkpoint", str(tmp_path / "x.ckpt")],
                               "not found"),
        "wrong architecture": (["--config", cifar, "--run_mode", "eval", "--model.name", "ViT-Tiny-8",
                                "--load_checkpoint", str(other_arch), "--eval_dataset_dir",
                                str(tmp_path)], "different architecture"),
        "weights not installed": (["--config", cifar, "--run_mode", "eval", "--eval_dataset_dir",
                                   str(tmp_path)], "--install clip_vit_b_32"),
        "memory pool size": (["--config", demo, "--context.memory.increase_size", "12"],
                             "context.memory {'increase_size': '12'}: The '12' is illegal"),
    }
    for name, (args, expected) in cases.items():
        proc = _cli(args, env=dict(os.environ, MINDCLIP_HOME=store))
        err_lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert len(err_lines) == 1 and expected in err_lines[0], (name, err_lines)
        assert "Traceback" not in proc.stderr + proc.stdout, name
    # the converter refuses a pickle that would run code, in one line
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weight.py"),
                           "--torch_path", str(bad_pickle), "--mindspore_path", str(tmp_path / "o.ckpt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "weights_only=True" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_dataset_dir_infers_the_type(tmp_path, tiny_store):
    from test_data import write_cifar100_python

    write_cifar100_python(tmp_path / "cifar-100-python")
    data = str(tmp_path / "cifar-100-python")
    demo = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")
    out = str(tmp_path / "out")
    assert run_mindformer.main(["--config", demo, "--run_mode", "eval", "--eval_dataset.type", "null",
                                "--eval.retrieval_dataset.type", "null", "--eval_dataset_dir", data,
                                "--output_dir", out]) == 0
    with open(os.path.join(out, "eval_metrics.json")) as f:
        assert json.load(f)["num_classes"] == 100


def test_unreadable_images_counted_exactly_and_named(tmp_path):
    """A caption set of 22 images, 2 unreadable (garbage, truncated JPEG) among good RGB,
    CMYK and grayscale ones: exactly 2 skipped in every epoch, the last included, both named."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i in range(20):
        mode = ("RGB", "CMYK", "L")[i % 3]
        path = folder / f"good{i}.jpg"
        Image.new("RGB", (40, 30), (10 * i, 100, 200)).convert(mode).save(path)
        rows.append({"image": path.name, "caption": f"image {i}"})
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    whole = (folder / "good0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    rows += [{"image": "garbage.jpg", "caption": "x"}, {"image": "truncated.jpg", "caption": "y"}]
    (folder / "captions.json").write_text(json.dumps(rows))
    out = str(tmp_path / "out")
    demo = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")
    # 2 of 22 unreadable is above the default max_skip_fraction (0.05), which would stop the run
    assert run_mindformer.main(["--config", demo, "--train_dataset_dir", str(folder / "captions.json"),
                                "--train_dataset.type", "null", "--train_dataset.max_skip_fraction", "0.1",
                                "--runner.batch_size", "4",
                                "--runner.epochs", "3", "--runner.progress_bar", "false",
                                "--eval_dataset.type", "null", "--eval.retrieval_dataset.type", "null",
                                "--output_dir", out]) == 0
    epochs = read_metrics(os.path.join(out, "metrics.jsonl"), "epoch")
    assert [e["skipped_images"] for e in epochs] == [2, 2, 2]
    for e in epochs:
        assert sorted(os.path.basename(n) for n in e["unreadable"]) == ["garbage.jpg", "truncated.jpg"]
    # 20 readable images, batch 4: every epoch trains on exactly 5 batches
    assert len(read_metrics(os.path.join(out, "metrics.jsonl"), "train")) == 15
