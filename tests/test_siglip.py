"""SigLIP and SigLIP 2 against their references: open_clip's SigLIP models (timm image tower)
and Hugging Face's ``SiglipModel``, each built with random weights here, converted from their
layouts and back; the MAP head and the tanh GELU alone; the tokenizers; sigmoid scores."""
import copy
import json
import os

import mindspore as ms
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import mindclip
from conftest import FEATURE_ATOL
from mindclip import create_model, list_models
from mindclip.convert.cli import main as convert_cli
from mindclip.models.timm import register_timm_model, timm_arch
from mindclip.models.timm.vit import ViTArch
from test_openclip_tokenizers import spiece_folder, unigram_folder
from test_openclip_zoo import (OPENCLIP_CONFIGS, _hf_model_type, check_round_trip, tiny_hf_config)

TEXTS = ["A photo of a CAT!", "a photo of a cat", "  two\tdogs\n playing ", "neural_network diagram, (v2)",
         "une photo d'un chat", "ein Foto einer Katze!", "Ünïcödé façade — naïve café", "日本語のテキスト",
         "emoji 🐶 and 🍕", "&amp; html &lt;escaped&gt;", "UPPER lower MiXeD", "numbers 123 4.5 6,7",
         "quotes \"double\" and 'single'", "hyphen-ated and under_scored", "tabs\tand\nnewlines",
         "punctuation!?.,;:()[]{}", "the quick brown fox jumps over the lazy dog", "",
         "   ", "a " * 40, "red, green & blue cars " * 6, "<b>bold</b> claims"]


def tiny_timm(arch: ViTArch) -> str:
    """A shrunk SigLIP ViT registered under one name in timm (what open_clip builds) and in
    mindclip's table: two heads of the original head width, depth 2, 48-pixel images."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints
    from timm.models.vision_transformer import _create_vision_transformer

    head = arch.width // arch.heads
    name = f"vit_mctest{head}{arch.act.replace('_', '')}_patch16_siglip_48"
    tiny = ViTArch(patch_size=16, width=2 * head, layers=2, heads=2, mlp_ratio=arch.mlp_ratio,
                   act=arch.act, image_size=48, class_token=False, global_pool="map")
    if name not in _model_entrypoints:
        args = dict(patch_size=16, embed_dim=tiny.width, depth=2, num_heads=2, mlp_ratio=tiny.mlp_ratio,
                    class_token=False, global_pool="map", img_size=48,
                    **({"act_layer": "gelu_tanh"} if arch.act == "gelu_tanh" else {}))

        def entry(pretrained=False, **kwargs):
            return _create_vision_transformer(name, pretrained=pretrained, **dict(args, **kwargs))

        entry.__name__ = name
        register_model(entry)
    register_timm_model(name, tiny)
    return name


def _siglip_configs():
    for path in sorted(os.listdir(OPENCLIP_CONFIGS)):
        with open(os.path.join(OPENCLIP_CONFIGS, path)) as f:
            cfg = json.load(f)
        if "siglip" in cfg["vision_cfg"].get("timm_model_name", ""):
            yield path[:-5], cfg


def siglip_groups():
    """open_clip's SigLIP configs grouped by what their towers are made of (the timm ViT's
    activation and head width, the text tower's options), sizes left out."""
    groups = {}
    for name, cfg in _siglip_configs():
        arch = timm_arch(cfg["vision_cfg"]["timm_model_name"])
        text = {k: v for k, v in cfg["text_cfg"].items()
                if k not in ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio",
                             "hf_tokenizer_name", "tokenizer_kwargs", "hf_model_name")}
        if "hf_model_name" in cfg["text_cfg"]:
            text["hf"] = _hf_model_type(cfg["text_cfg"]["hf_model_name"])
        key = json.dumps([arch.act, arch.width // arch.heads, text], sort_keys=True)
        groups.setdefault(key, name)
    return groups


GROUPS = siglip_groups()


def shrink_siglip(cfg, folder):
    cfg = copy.deepcopy(cfg)
    v = cfg["vision_cfg"]
    v["timm_model_name"] = tiny_timm(timm_arch(v["timm_model_name"]))
    v["image_size"] = 48
    cfg["embed_dim"] = timm_arch(v["timm_model_name"]).width
    t = cfg["text_cfg"]
    if "hf_model_name" in t:
        t["hf_model_name"] = tiny_hf_config(_hf_model_type(t["hf_model_name"]), folder)
        t["vocab_size"] = 1000
    else:
        head = t["width"] // t["heads"]
        t.update(layers=2, heads=2, width=2 * head, vocab_size=1000)
        if t.get("proj_type") == "none":  # the text features are the tower's width
            cfg["embed_dim"] = t["width"]
            v["timm_proj"] = "linear"
    return cfg


def test_every_siglip_config_builds():
    names = {name for name, _ in _siglip_configs()}
    assert len(names) >= 28
    assert names <= set(list_models())
    cfg = mindclip.get_model_config("ViT-SO400M-14-SigLIP-384")
    assert type(cfg).__name__ == "SigLIPConfig" and cfg.vision_cfg.arch.width == 1152
    assert mindclip.factory.model_family("ViT-B-16-SigLIP2").name == "siglip"
    assert len(GROUPS) >= 4


@pytest.mark.parametrize("key", sorted(GROUPS), ids=lambda k: GROUPS[k])
def test_siglip_option_group_converts_both_ways_with_open_clips_features(key, tmp_path):
    name = GROUPS[key]
    with open(os.path.join(OPENCLIP_CONFIGS, name + ".json")) as f:
        cfg = shrink_siglip(json.load(f), tmp_path / "hf_text_model")
    model = check_round_trip(cfg, "shrunk-" + name, tmp_path)
    assert model.family == "siglip"


def test_vit_b_16_siglip_full_size_in_graph_mode():
    """The one full-size check: open_clip's ViT-B-16-SigLIP (random) renamed in memory by the
    converter (the file round trips are checked on the shrunk groups above)."""
    from conftest import build_for_loading, load_openclip_state

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-16-SigLIP").eval()
    model = build_for_loading("ViT-B-16-SigLIP")
    load_openclip_state(model, reference, "siglip")
    images = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    tokens = np.random.default_rng(2).integers(1, 32000, (2, 64))
    with torch.no_grad():
        want = (reference.encode_image(torch.from_numpy(images)).numpy(),
                reference.encode_text(torch.from_numpy(tokens)).numpy())
    model.set_train(False)
    got = (model.encode_image(images).asnumpy(), model.encode_text(tokens.astype(np.int32)).asnumpy())
    for a, b in zip(got, want):
        assert np.abs(a - b).max() <= FEATURE_ATOL


class SumOf(ms.nn.Cell):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def construct(self, x):
        return self.cell(x).sum()


def test_map_head_and_tanh_gelu_alone_equal_timm_and_torch():
    from timm.layers import AttentionPoolLatent as TimmPool

    from mindclip.models.layers import make_activation
    from mindclip.models.timm.layers import AttentionPoolLatent

    torch.manual_seed(0)
    ref = TimmPool(144, num_heads=2, mlp_ratio=3.7362, norm_layer=torch.nn.LayerNorm,
                   act_layer=lambda: torch.nn.GELU(approximate="tanh")).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for m in ref.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6
    ours = AttentionPoolLatent(144, 2, 3.7362, "gelu_tanh", 1e-6)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    ms.load_param_into_net(ours, {
        (k.replace(".weight", ".gamma").replace(".bias", ".beta") if k.startswith("norm.") else k):
        ms.Parameter(ms.Tensor(v)) for k, v in state.items()}, strict_load=True)
    x = np.random.default_rng(0).standard_normal((3, 9, 144)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert np.abs(ours(ms.Tensor(x)).asnumpy() - want).max() <= FEATURE_ATOL

    x = np.linspace(-8, 8, 4001, dtype=np.float32)
    t = torch.from_numpy(x).requires_grad_(True)
    want = torch.nn.functional.gelu(t, approximate="tanh")
    want.sum().backward()
    act = make_activation("gelu_tanh")
    assert np.abs(act(ms.Tensor(x)).asnumpy() - want.detach().numpy()).max() <= 1e-6
    grad = ms.grad(SumOf(act))(ms.Tensor(x)).asnumpy()
    assert np.abs(grad - t.grad.numpy()).max() <= 1e-5


# ---- Hugging Face SiglipModel -------------------------------------------------------------

def hf_siglip_folder(path):
    """A random ``SiglipModel`` (two heads of width 64, depth 2) with a SentencePiece
    ``SiglipTokenizer``, saved as a Hugging Face folder."""
    import transformers

    spiece = spiece_folder(path / "tokenizer")
    tokenizer = transformers.SiglipTokenizer(vocab_file=os.path.join(spiece, "spiece.model"))
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=128, intermediate_size=478, num_hidden_layers=2,
                           num_attention_heads=2, image_size=48, patch_size=16))
    torch.manual_seed(0)
    model = transformers.SiglipModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    folder = str(path / "hf")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_siglip")
    folder, model, tokenizer = hf_siglip_folder(path)
    out = str(path / "ms")
    assert convert_cli(["--torch_path", folder, "--mindspore_path", out]) == 0
    return folder, model, tokenizer, out


def _hf_features(model, pixels, ids):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids.astype(np.int64)), pixel_values=torch.from_numpy(pixels))
    return out.image_embeds.numpy(), out.text_embeds.numpy(), out.logits_per_image.numpy()


def test_hf_siglip_converts_with_equal_features_and_tokens(hf_siglip):
    folder, reference, hf_tokenizer, out = hf_siglip
    model = create_model(pretrained=out)
    assert model.family == "siglip"
    tokenizer = mindclip.get_tokenizer(model)
    ours = tokenizer(TEXTS)
    want = hf_tokenizer(TEXTS, padding="max_length", max_length=64, truncation=True)["input_ids"]
    np.testing.assert_array_equal(ours, np.array(want))
    pixels = np.random.default_rng(0).standard_normal((3, 3, 48, 48)).astype(np.float32)
    image, text, _ = _hf_features(reference, pixels, ours[:3])
    assert np.abs(model.encode_image(pixels, normalize=True).asnumpy() - image).max() <= FEATURE_ATOL
    assert np.abs(model.encode_text(ours[:3], normalize=True).asnumpy() - text).max() <= FEATURE_ATOL
    assert float(model.logit_bias.asnumpy()) == -3.0


def test_zero_shot_pipeline_returns_hf_sigmoid_scores(hf_siglip):
    """The pipeline's scores equal ``logits_per_image.sigmoid()`` of HF's model on the same
    pixels (48-pixel images: resizing is the identity for both) and prompts."""
    folder, reference, hf_tokenizer, out = hf_siglip
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2)]
    labels = ["cat", "dog", "neural network"]
    pipe = mindclip.pipeline("zero_shot_image_classification", model=out)
    results = pipe([Image.fromarray(i) for i in images], candidate_labels=labels)
    pixels = np.stack([(i.astype(np.float32) / 255 - 0.5) / 0.5 for i in images]).transpose(0, 3, 1, 2)
    ids = np.array(hf_tokenizer([f"a photo of a {l}." for l in labels], padding="max_length",
                                max_length=64, truncation=True)["input_ids"])
    want = 1 / (1 + np.exp(-_hf_features(reference, np.ascontiguousarray(pixels), ids)[2]))
    for row, scores in zip(results, want):
        got = {r["label"]: r["score"] for r in row}
        for label, score in zip(labels, scores):
            assert abs(got[label] - score) <= 1e-5, (label, got[label], score)
        assert abs(sum(got.values()) - 1.0) > 1e-3  # independent sigmoids, not a softmax


def test_hf_siglip_reverse_loads_in_transformers(hf_siglip, tmp_path):
    import transformers

    folder, reference, hf_tokenizer, out = hf_siglip
    back = str(tmp_path / "back")
    assert convert_cli(["--reverse", "--reverse_layout", "hf", "--mindspore_path", out,
                        "--torch_path", back]) == 0
    again = transformers.SiglipModel.from_pretrained(back).eval()
    pixels = np.random.default_rng(5).standard_normal((2, 3, 48, 48)).astype(np.float32)
    ids = np.array(hf_tokenizer(TEXTS[:2], padding="max_length", max_length=64)["input_ids"])
    for a, b in zip(_hf_features(again, pixels, ids), _hf_features(reference, pixels, ids)):
        np.testing.assert_array_equal(a, b)
    assert transformers.SiglipTokenizer.from_pretrained(back)(TEXTS[0])["input_ids"] == \
        hf_tokenizer(TEXTS[0])["input_ids"]


def test_siglip_tokenizers_equal_open_clips(tmp_path):
    """open_clip's SigLIP tokenizer (``HFTokenizer``, ``clean: canonicalize``, context 64) on a
    T5-style Unigram ``tokenizer.json`` and on a SentencePiece ``spiece.model`` repository."""
    from open_clip.tokenizer import HFTokenizer as OpenClipHFTokenizer

    from mindclip.tokenizer.openclip_hf import OpenCLIPHFTokenizer

    for make in (unigram_folder, spiece_folder):
        folder = make(tmp_path / make.__name__)
        ours = OpenCLIPHFTokenizer(folder, context_length=64, clean="canonicalize")(TEXTS)
        want = OpenClipHFTokenizer(folder, context_length=64, clean="canonicalize")(TEXTS).numpy()
        np.testing.assert_array_equal(ours, want)
        assert ours.shape == (len(TEXTS), 64)


def test_nonsiglip_hf_folders_and_naflex_are_refused(tmp_path):
    from mindclip.convert.siglip import config_from_hf

    with pytest.raises(ValueError, match="NaFlex"):
        config_from_hf({"model_type": "siglip2"})
    with pytest.raises(ValueError, match="timm's vit_base_patch16_siglip_224 takes 224-pixel"):
        mindclip.get_model_config("ViT-B-16-SigLIP").vision_cfg.__class__(
            image_size=256, timm_model_name="vit_base_patch16_siglip_224", timm_pool="map",
            timm_proj="none")
    with pytest.raises(ValueError, match="timm_pool 'max' is not one of"):
        mindclip.models.siglip.SigLIPConfig.from_dict({"vision_cfg": {
            "timm_model_name": "vit_base_patch16_siglip_224", "timm_pool": "max"}})


def test_hf_hub_name_of_a_transformers_siglip_repository(hf_siglip, tmp_path, monkeypatch):
    """``hf-hub:org/repo`` of a Hugging Face SigLIP repository (no open_clip files) from an
    offline HF cache: converted once, its tokenizer installed with it."""
    from test_hub import put_in_hf_cache

    folder, reference, hf_tokenizer, _ = hf_siglip
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "store"))
    put_in_hf_cache(tmp_path / "hf", "someone/siglip-test",
                    {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)})
    model = create_model("hf-hub:someone/siglip-test")
    assert model.family == "siglip"
    ids = mindclip.get_tokenizer(model)(TEXTS[:2])
    np.testing.assert_array_equal(ids, hf_tokenizer(TEXTS[:2], padding="max_length", max_length=64)["input_ids"])
    pixels = np.random.default_rng(7).standard_normal((2, 3, 48, 48)).astype(np.float32)
    image, text, _ = _hf_features(reference, pixels, ids)
    assert np.abs(model.encode_image(pixels, normalize=True).asnumpy() - image).max() <= FEATURE_ATOL
    assert np.abs(model.encode_text(ids, normalize=True).asnumpy() - text).max() <= FEATURE_ATOL


def test_siglip_run_configs_are_valid():
    from conftest import ROOT
    from mindclip.config import load_config
    from mindclip.hub import pretrained_cfg

    cfg = load_config(os.path.join(ROOT, "configs", "siglip", "run_siglip_vit_b_16_finetune_flickr30k.yaml"))
    assert mindclip.factory.model_family(cfg["model"]["name"]).name == "siglip"
    entry = pretrained_cfg(cfg["model"]["name"], cfg["model"]["pretrained"])
    assert entry["hf_hub"] == "timm/ViT-B-16-SigLIP/" and entry["mean"] == [0.5, 0.5, 0.5]
    demo = load_config(os.path.join(ROOT, "configs", "demo", "run_siglip_tiny_digits.yaml"))
    assert mindclip.factory.model_family(demo["model"]["name"]).name == "siglip"


def test_lit_locks_the_timm_trunk_as_open_clip_does():
    """``lock_image_tower`` (LiT): timm's groups (stem, blocks, norm + MAP head) frozen but the
    last ``unlocked_groups``; open_clip's projection head stays trainable; the text tower too."""
    model = create_model("SigLIP-Tiny-8")
    trainable = lambda: {p.name for p in model.trainable_params()}  # noqa: E731
    model.lock_image_tower()
    assert not any(n.startswith("visual.trunk.") for n in trainable())
    assert any(n.startswith("text.") for n in trainable()) and "logit_bias" in trainable()
    model = create_model("SigLIP-Tiny-8")
    model.lock_image_tower(unlocked_groups=2)
    unlocked = {n for n in trainable() if n.startswith("visual.")}
    assert unlocked and all(n.startswith(("visual.trunk.blocks.1.", "visual.trunk.norm.",
                                          "visual.trunk.attn_pool.")) for n in unlocked)
