"""Weights by name through the Hugging Face Hub, offline: each test writes open_clip weights
(random init) into a Hugging Face cache laid out as ``huggingface_hub`` lays it out, sets
``HF_HUB_OFFLINE=1``, and loads by open_clip tag, ``hf-hub:`` name, ``local-dir:`` folder or
MindFormers' name. The features must be open_clip's; the second load must need only the
weight store; an uncached name offline, or a broken download, must install nothing."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.push_to_hf_hub import save_config_for_hf
from safetensors.torch import save_file

import mindspore as ms
from conftest import FEATURE_ATOL, build_openclip, reference_inputs
import mindclip
from mindclip import hub
from mindclip.models.store import store_root

TINY_TAGS = {"ViT-Tiny-8": {
    "tinytag": {"hf_hub": "test-org/tiny-clip/", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                "interpolation": "bilinear", "resize_mode": "squash"},
    "uncached": {"hf_hub": "test-org/nowhere/", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                 "interpolation": "bicubic", "resize_mode": "shortest"}}}


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache (HF_HOME), offline, and an empty weight store."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "store"))
    return tmp_path / "hf"


def put_in_hf_cache(hf_home, repo_id, files, repo_type="model"):
    """``files`` {name: bytes} as a revision of ``repo_id`` in huggingface_hub's cache layout:
    blobs named by their hash, snapshot entries linking to them, refs/main naming the commit."""
    repo = Path(hf_home) / "hub" / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def weights_bytes(model, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


def features(model, images, tokens):
    return (model.encode_image(ms.Tensor(images.numpy())).asnumpy(),
            model.encode_text(ms.Tensor(tokens.numpy().astype(np.int32))).asnumpy())


def reference(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images).numpy(), model.encode_text(tokens).numpy()


def assert_close(ours, ref):
    for a, b in zip(ours, ref):
        assert np.abs(a - b).max() <= FEATURE_ATOL


@pytest.fixture(scope="module")
def tiny():
    return build_openclip("ViT-Tiny-8", seed=5)


def test_tag_fetched_once_then_served_from_the_store(offline_hub, tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(hub, "_table", lambda: TINY_TAGS)
    put_in_hf_cache(offline_hub, "test-org/tiny-clip", {"open_clip_model.safetensors": weights_bytes(tiny, tmp_path)})
    images, tokens = reference_inputs(32)
    model, preprocess = mindclip.create_model_from_pretrained("ViT-Tiny-8", pretrained="tinytag")
    assert_close(features(model, images, tokens), reference(tiny, images, tokens))
    # the tag's preprocessing drives the transform: open_clip's with the same settings
    ref_tf = open_clip.image_transform(32, is_train=False, mean=(0.5,) * 3, std=(0.25,) * 3,
                                       interpolation="bilinear", resize_mode="squash")
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    np.testing.assert_allclose(preprocess(img), ref_tf(img).numpy(), atol=1e-5)
    assert os.path.isfile(os.path.join(store_root(), "ViT-Tiny-8.tinytag", "mindclip_model.safetensors"))

    shutil.rmtree(offline_hub)  # the second load needs neither the cache nor torch
    again = mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
    assert_close(features(again, images, tokens), reference(tiny, images, tokens))
    assert again.preprocess_cfg["resize_mode"] == "squash"


def test_uncached_tag_offline_names_the_tag_the_repo_and_the_ways_out(offline_hub, monkeypatch):
    monkeypatch.setattr(hub, "_table", lambda: TINY_TAGS)
    with pytest.raises(hub.WeightsUnavailable) as info:
        mindclip.create_model("ViT-Tiny-8", pretrained="uncached")
    message = str(info.value)
    for part in ("pretrained='uncached'", "test-org/nowhere", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                 "tools/convert_weight.py", "--install ViT-Tiny-8.uncached"):
        assert part in message, part
    assert not os.path.exists(os.path.join(store_root(), "ViT-Tiny-8.uncached"))
    with pytest.raises(ValueError, match="no pretrained tag 'nosuchtag'"):
        hub.fetch_tag("ViT-Tiny-8", "nosuchtag")


def test_broken_or_interrupted_download_installs_nothing(offline_hub, tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(hub, "_table", lambda: TINY_TAGS)
    data = weights_bytes(tiny, tmp_path)
    put_in_hf_cache(offline_hub, "test-org/tiny-clip", {"open_clip_model.safetensors": data[:len(data) // 2]})
    with pytest.raises(ValueError, match="is truncated"):
        mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
    assert not os.path.isdir(store_root()) or not os.listdir(store_root())  # no entry, no temp folder

    import huggingface_hub

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
    assert not os.path.isdir(store_root()) or not os.listdir(store_root())


def _hub_folder_files(model, cfg, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=cfg)
    return folder


def test_hf_hub_and_local_dir_names(offline_hub, tmp_path, tiny, monkeypatch):
    cfg = mindclip.get_model_config("ViT-Tiny-8").to_dict()
    # the folder's preprocessing (open_clip writes it into open_clip_config.json) comes along
    monkeypatch.setattr(tiny.visual, "preprocess_cfg", {"interpolation": "bilinear", "resize_mode": "longest"},
                        raising=False)
    folder = _hub_folder_files(tiny, cfg, tmp_path)
    put_in_hf_cache(offline_hub, "test-org/tiny-openclip",
                    {f: (folder / f).read_bytes() for f in os.listdir(folder)})
    images, tokens = reference_inputs(32)
    expected = reference(tiny, images, tokens)
    model = mindclip.create_model("hf-hub:test-org/tiny-openclip")
    assert_close(features(model, images, tokens), expected)
    assert model.preprocess_cfg["resize_mode"] == "longest"
    assert model.preprocess_cfg["interpolation"] == "bilinear"
    pipe = mindclip.pipeline("feature_extraction", model="hf-hub:test-org/tiny-openclip")
    text = pipe(texts=["a photo of a cat"])["text_embeds"]
    with torch.no_grad():
        ref = tiny.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat"]), normalize=True).numpy()
    assert np.abs(text - ref).max() <= FEATURE_ATOL
    local = mindclip.create_model(f"local-dir:{folder}")
    assert_close(features(local, images, tokens), expected)


def test_mindformers_name_resolves_to_openais_tag_full_size(offline_hub, tmp_path):
    """The one full-size check: clip_vit_b_32 is open_clip's (ViT-B-32-quickgelu, openai),
    served from timm's Hub repository, through CLIPModel.from_pretrained and a pipeline."""
    entry = hub.pretrained_cfg("ViT-B-32-quickgelu", "openai")
    repo = entry["hf_hub"].rstrip("/")
    reference_model = build_openclip("ViT-B-32-quickgelu", seed=7)
    put_in_hf_cache(offline_hub, repo, {"open_clip_model.safetensors": weights_bytes(reference_model, tmp_path)})
    images, tokens = reference_inputs(224)
    model = mindclip.CLIPModel.from_pretrained("clip_vit_b_32")
    assert_close(features(model, images, tokens), reference(reference_model, images, tokens))
    assert model.config.quick_gelu
    pipe = mindclip.pipeline("zero_shot_image_classification", model="clip_vit_b_32",
                             candidate_labels=["cat", "dog"])
    img = (np.random.default_rng(3).random((224, 224, 3)) * 255).astype(np.uint8)
    scores = {r["label"]: r["score"] for r in pipe(img)}
    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32-quickgelu")
    from PIL import Image

    with torch.no_grad():
        f_img = reference_model.encode_image(preprocess(Image.fromarray(img))[None], normalize=True)
        f_txt = reference_model.encode_text(open_clip.get_tokenizer("ViT-B-32")(
            ["a photo of a cat.", "a photo of a dog."]), normalize=True)
        probs = (reference_model.logit_scale.exp() * f_img @ f_txt.T).softmax(-1)[0].numpy()
    assert abs(scores["cat"] - probs[0]) < 1e-4 and abs(scores["dog"] - probs[1]) < 1e-4


def test_table_is_open_clips_and_lists_what_we_build():
    from tools.make_pretrained_table import build_table

    assert build_table() == json.load(open(hub.TAGS_FILE))
    ours = mindclip.list_pretrained()
    assert ("ViT-B-32", "laion2b_s34b_b79k") in ours and ("ViT-H-14-378-quickgelu", "dfn5b") in ours
    assert all(name in mindclip.list_models() for name, _ in ours)
    assert ("ViT-B-16-SigLIP", "webli") in ours and ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k") in ours
    assert ("PE-Core-bigG-14-448", "meta") in ours and ("EVA02-E-14-plus", "laion2b_s9b_b144k") in ours
    assert ("MobileCLIP2-L-14", "dfndr2b") in ours and ("MobileCLIP-B", "datacompdr_lt") in ours
    mci = hub.pretrained_cfg("MobileCLIP2-B", "dfndr2b")  # MobileCLIP's 0-mean / 1-std pixels
    assert (mci["mean"], mci["std"], mci["interpolation"]) == ([0.0] * 3, [1.0] * 3, "bilinear")
    assert ("convnext_xxlarge", "laion2b_s34b_b82k_augreg_soup") in ours and ("ViTamin-XL-384", "datacomp1b") in ours
    assert ("MobileCLIP2-S4", "dfndr2b") in ours and ("MobileCLIP-S1", "datacompdr") in ours


def test_timm_tower_tag_loads_through_the_hub_with_its_preprocessing(offline_hub, tmp_path):
    """A timm-tower tag (PE-Core's: squash, bilinear, 0.5 statistics) fetched from its Hub
    repository as open_clip fetches it: open_clip's features, open_clip's transform."""
    from PIL import Image

    entry = hub.pretrained_cfg("PE-Core-T-16-384", "meta")
    from test_openclip_zoo import perturbed

    torch.manual_seed(3)
    reference_model = perturbed(open_clip.create_model("PE-Core-T-16-384"), scale=0.02)
    put_in_hf_cache(offline_hub, entry["hf_hub"].rstrip("/"),
                    {"open_clip_model.safetensors": weights_bytes(reference_model, tmp_path)})
    model, preprocess = mindclip.create_model_from_pretrained("PE-Core-T-16-384", pretrained="meta")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    assert (entry["resize_mode"], entry["interpolation"], entry["mean"]) == ("squash", "bilinear", [0.5] * 3)
    ref_preprocess = open_clip.image_transform(384, is_train=False, mean=entry["mean"], std=entry["std"],
                                               interpolation=entry["interpolation"],
                                               resize_mode=entry["resize_mode"])
    pixels = ref_preprocess(img)[None]
    np.testing.assert_allclose(preprocess(img), pixels[0].numpy(), atol=1e-5)
    tokens = open_clip.get_tokenizer("PE-Core-T-16-384")(["a photo of a cat", "a diagram"])
    assert_close(features(model, pixels, tokens), reference(reference_model, pixels, tokens))


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_tag_preprocessing_equals_open_clips(resize_mode, interpolation):
    from PIL import Image

    from mindclip.data.transforms import image_transform

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ours = image_transform(32, mean, std, interpolation=interpolation, resize_mode=resize_mode)
    theirs = open_clip.image_transform(32, is_train=False, mean=mean, std=std,
                                       interpolation=interpolation, resize_mode=resize_mode)
    rng = np.random.default_rng(0)
    for shape in ((40, 61, 3), (75, 33, 3), (32, 32, 3)):
        img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
        np.testing.assert_allclose(ours(img), theirs(img).numpy(), atol=1e-5, err_msg=str(shape))


def test_damaged_store_entry_is_fetched_again(offline_hub, tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(hub, "_table", lambda: TINY_TAGS)
    put_in_hf_cache(offline_hub, "test-org/tiny-clip", {"open_clip_model.safetensors": weights_bytes(tiny, tmp_path)})
    images, tokens = reference_inputs(32)
    mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
    stored = os.path.join(store_root(), "ViT-Tiny-8.tinytag", "mindclip_model.safetensors")
    data = bytearray(open(stored, "rb").read())
    data[-100] ^= 0x01  # one bit of one weight
    open(stored, "wb").write(bytes(data))
    with pytest.warns(UserWarning, match="do not match the checksum.*fetching it again"):
        model = mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
    assert_close(features(model, images, tokens), reference(tiny, images, tokens))
    # damaged again, and the Hugging Face cache gone: an error that says how to get them back
    data = bytearray(open(stored, "rb").read())
    data[-100] ^= 0x01
    open(stored, "wb").write(bytes(data))
    shutil.rmtree(offline_hub)
    with pytest.warns(UserWarning), pytest.raises(hub.WeightsUnavailable, match="--install ViT-Tiny-8.tinytag"):
        mindclip.create_model("ViT-Tiny-8", pretrained="tinytag")
