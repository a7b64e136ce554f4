"""open_clip's zoo: every combination of native tower options that open_clip's own model
configs use, converted from an open_clip Hub folder and back, against open_clip itself.

The groups are derived from the configs installed with open_clip, so a new open_clip config
with a new combination of options fails here until mindclip handles it. Models are shrunk
(depth 2, two heads of the config's head width, a small image and vocabulary): the options,
head widths and ratios stay the config's.
"""
import copy
import glob
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.push_to_hf_hub import save_config_for_hf
from safetensors.torch import save_file

import mindspore as ms
from conftest import FEATURE_ATOL
from mindclip import create_model, get_model_config, list_models
from mindclip.convert.cli import main as convert_cli

OPENCLIP_CONFIGS = os.path.join(os.path.dirname(open_clip.__file__), "model_configs")
SIZES = {"embed_dim", "layers", "width", "heads", "patch_size", "image_size", "context_length",
         "vocab_size", "head_width", "mlp_ratio"}
# what chooses a tokenizer, not a tower (tested with the tokenizers)
TOKENIZER_KEYS = {"hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode"}
NUMERIC_OPTIONS = {"ls_init_value", "eos_id", "pad_id", "init_logit_bias", "patch_dropout"}


def _openclip_configs():
    for path in sorted(glob.glob(os.path.join(OPENCLIP_CONFIGS, "*.json"))):
        with open(path) as f:
            yield os.path.basename(path)[:-5], json.load(f)


def _hf_model_type(name):
    """The Hugging Face model type behind the text models open_clip's configs name."""
    for stem, model_type in (("xlm-roberta", "xlm-roberta"), ("roberta", "roberta"),
                             ("google/mt5", "mt5"), ("facebook/nllb", "m2m_100")):
        if name.startswith(stem):
            return model_type
    raise AssertionError(f"a new Hugging Face text model in open_clip's configs: {name}")


def tiny_hf_config(model_type, folder):
    """A Hugging Face config.json of ``model_type``, shrunk (two heads of width 64)."""
    import transformers

    common = {"vocab_size": 1000}
    if model_type in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if model_type == "roberta" else transformers.XLMRobertaConfig
        cfg = cls(hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=512,
                  max_position_embeddings=80, **common)
    elif model_type == "mt5":
        cfg = transformers.MT5Config(d_model=128, d_kv=64, num_heads=2, d_ff=320, num_layers=2,
                                     num_decoder_layers=1, **common)
    else:
        cfg = transformers.M2M100Config(d_model=128, encoder_attention_heads=2, encoder_layers=2,
                                        encoder_ffn_dim=512, decoder_layers=1, decoder_attention_heads=2,
                                        decoder_ffn_dim=512, max_position_embeddings=128, **common)
    cfg.save_pretrained(folder)
    return str(folder)


def _signature(cfg):
    """The tower options a config sets (sizes and tokenizer choice left out)."""
    sig = ["vision=" + ("resnet" if isinstance(cfg["vision_cfg"].get("layers"), list) else "vit")]
    for section, options in (("", cfg), ("vision_cfg.", cfg["vision_cfg"]), ("text_cfg.", cfg["text_cfg"])):
        for key, value in sorted(options.items()):
            if isinstance(value, dict) and key.endswith("_cfg") or key in SIZES | TOKENIZER_KEYS:
                continue
            if key == "hf_model_name":
                value = _hf_model_type(value)
            sig.append(f"{section}{key}" + ("" if key in NUMERIC_OPTIONS else f"={value}"))
    return tuple(sig)


def native_groups():
    groups = defaultdict(list)
    for name, cfg in _openclip_configs():
        if "timm_model_name" not in cfg["vision_cfg"] and "multimodal_cfg" not in cfg:
            groups[_signature(cfg)].append(name)
    return dict(groups)


GROUPS = native_groups()


def test_every_open_clip_config_is_built():
    """All of open_clip 3.3's architectures, at their configs' image sizes."""
    ours = set(list_models())
    configs = dict(_openclip_configs())
    assert len(configs) == 144
    for name, cfg in configs.items():
        assert name in ours, name
        assert get_model_config(name).to_dict()["vision_cfg"]["image_size"] == cfg["vision_cfg"]["image_size"]
    assert len(GROUPS) >= 12  # open_clip 3.3: 8 native text-tower combinations, 4 Hugging Face


def shrink(cfg, vocab=1000, folder=None):
    """Depth 2, two heads of the config's head width, 3x3 patches, a small vocabulary; a
    Hugging Face text model becomes a tiny one of its type, written into ``folder``."""
    cfg = copy.deepcopy(cfg)
    if "hf_model_name" in cfg["text_cfg"]:
        t = cfg["text_cfg"]
        t["hf_model_name"] = tiny_hf_config(_hf_model_type(t["hf_model_name"]), folder)
        t["vocab_size"] = vocab
    cfg["embed_dim"] = 32
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if isinstance(v["layers"], list):
        v.update(layers=[1, 1, 1, 1], width=8, image_size=64)
    else:
        v.update(layers=2, width=2 * v.get("head_width", 64), image_size=3 * v["patch_size"])
    if "hf_model_name" not in t:
        head = t["width"] // t["heads"]
        t.update(layers=2, width=2 * head, heads=2, vocab_size=min(t.get("vocab_size", 49408), vocab))
    return cfg


def perturbed(model, scale=0.05):
    """``model`` in eval mode with every parameter (norms, LayerScale, logit bias included)
    moved off its initial value by ``scale`` standard normals, and BatchNorm statistics drawn,
    so that a converter that dropped or swapped any of them could not pass."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def build_reference(cfg, name, seed=0):
    """open_clip's own model for ``cfg`` through ``open_clip.create_model``, perturbed."""
    open_clip.factory._MODEL_CONFIGS[name] = cfg
    torch.manual_seed(seed)
    return perturbed(open_clip.create_model(name, pretrained_text=False))


def hub_folder(model, cfg, path):
    os.makedirs(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(path, "open_clip_model.safetensors"))
    save_config_for_hf(model, Path(path) / "open_clip_config.json", model_config=cfg)
    return str(path)


def random_tokens(cfg, batch=3, seed=0):
    """Rows of random ids ending at an end token, zero padded: the end token is ``eos_id``
    for ``eos`` pooling, else the largest id (what ``argmax`` pooling finds)."""
    t = cfg["text_cfg"]
    vocab, length = t["vocab_size"], t.get("context_length", 77)
    eos = t.get("eos_id", 2) if t.get("pool_type") == "eos" else vocab - 1
    pad = 0
    if "hf_model_name" in t:
        with open(os.path.join(t["hf_model_name"], "config.json")) as f:
            pad = json.load(f)["pad_token_id"]
    rng = np.random.default_rng(seed)
    tokens = np.full((batch, length), pad, np.int64)
    for i, n in enumerate((3, length // 2, length - 1)[:batch]):
        tokens[i, :n] = rng.integers(3, vocab - 1, n)
        tokens[i, n] = eos
    return tokens


def reference_features(model, images, tokens):
    with torch.no_grad():
        return (model.encode_image(torch.from_numpy(images)).numpy(),
                model.encode_text(torch.from_numpy(tokens)).numpy())


def our_features(model, images, tokens):
    return (model.encode_image(ms.Tensor(images)).asnumpy(),
            model.encode_text(ms.Tensor(tokens.astype(np.int32))).asnumpy())


def check_round_trip(cfg, name, tmp_path, mode=ms.PYNATIVE_MODE):
    """open_clip Hub folder -> tools/convert_weight.py -> mindclip equals open_clip; and
    --reverse -> open_clip's local-dir loader gives open_clip's outputs exactly."""
    reference = build_reference(cfg, name)
    folder = hub_folder(reference, cfg, tmp_path / "hub")
    assert convert_cli(["--torch_path", folder, "--mindspore_path", str(tmp_path / "ms")]) == 0
    image_size = cfg["vision_cfg"]["image_size"]
    images = np.random.default_rng(1).standard_normal((3, 3, image_size, image_size)).astype(np.float32)
    tokens = random_tokens(cfg)
    expected = reference_features(reference, images, tokens)
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        model = create_model(pretrained=str(tmp_path / "ms"))
        got = our_features(model, images, tokens)
    finally:
        ms.set_context(mode=previous)
    for what, a, b in zip(("image", "text"), got, expected):
        assert a.shape == b.shape, (what, a.shape, b.shape)
        assert np.abs(a - b).max() <= FEATURE_ATOL, (what, float(np.abs(a - b).max()))
    if cfg.get("init_logit_bias") is not None:
        assert abs(float(model.logit_bias.asnumpy()) - float(reference.logit_bias.detach())) < 1e-6

    back = tmp_path / "back"
    assert convert_cli(["--reverse", "--mindspore_path", str(tmp_path / "ms"), "--torch_path", str(back)]) == 0
    again = open_clip.create_model(f"local-dir:{back}").eval()
    for a, b in zip(reference_features(again, images, tokens), expected):
        np.testing.assert_array_equal(a, b)
    return model


@pytest.mark.parametrize("signature", sorted(GROUPS), ids=lambda s: GROUPS[s][0])
def test_tower_option_group_converts_both_ways_with_open_clips_features(signature, tmp_path):
    name = GROUPS[signature][0]
    with open(os.path.join(OPENCLIP_CONFIGS, name + ".json")) as f:
        cfg = shrink(json.load(f), folder=tmp_path / "hf_text_model")
    check_round_trip(cfg, "shrunk-" + name, tmp_path)


# Options open_clip implements that no native CLIP config of it sets (CoCa and SigLIP build on
# them): together in one custom-text model, compiled in GRAPH mode.
EXTRA_OPTIONS = {
    "embed_dim": 32, "custom_text": True, "init_logit_bias": -10.0,
    "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32,
                   "attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2,
                   "pos_embed_type": "sin_cos_2d", "ls_init_value": 0.1,
                   "act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
    "text_cfg": {"context_length": 16, "vocab_size": 500, "width": 64, "heads": 2, "layers": 2,
                 "embed_cls": True, "pad_id": 0, "proj_bias": True, "ls_init_value": 0.1,
                 "mlp_ratio": 2.0, "act_kwargs": {"approximate": "tanh"},
                 "norm_kwargs": {"eps": 1e-6}},
}


def test_options_no_clip_config_sets_equal_open_clip_in_graph_mode(tmp_path):
    check_round_trip(EXTRA_OPTIONS, "extra-options", tmp_path, mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("options", [
    {"vision_cfg": {"pool_type": "none"}, "text_cfg": {"pool_type": "first", "proj_type": "none",
                                                        "no_causal_mask": True}},
    {"vision_cfg": {"final_ln_after_pool": True, "pool_type": "avg", "no_ln_pre": True},
     "text_cfg": {"pool_type": "last"}, "quick_gelu": True},
], ids=["pool-none-first-no-proj", "avg-last-quickgelu"])
def test_pooling_and_projection_variants(options, tmp_path):
    cfg = copy.deepcopy(EXTRA_OPTIONS)
    cfg["vision_cfg"] = {k: v for k, v in cfg["vision_cfg"].items()
                         if k in SIZES} | options["vision_cfg"]
    cfg["text_cfg"] = {k: v for k, v in cfg["text_cfg"].items() if k in SIZES} | options["text_cfg"]
    cfg.pop("init_logit_bias")
    cfg["quick_gelu"] = options.get("quick_gelu", False)
    if cfg["text_cfg"].get("proj_type") == "none":
        cfg["embed_dim"] = cfg["text_cfg"]["width"]
    check_round_trip(cfg, "variant", tmp_path)


def test_patch_dropout_keeps_the_patches_open_clip_keeps(monkeypatch):
    from open_clip.transformer import PatchDropout as TorchPatchDropout

    from mindclip.models.patch import PatchDropout

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1 + 16, 8)).astype(np.float32)
    noise = rng.standard_normal((3, 16)).astype(np.float32)
    monkeypatch.setattr(torch, "randn", lambda *shape, **kw: torch.from_numpy(noise))
    reference = TorchPatchDropout(0.6).train()(torch.from_numpy(x)).numpy()
    ours = PatchDropout(0.6)
    kept = ours.keep(ms.Tensor(x), ms.Tensor(noise)).asnumpy()
    assert kept.shape == (3, 1 + 6, 8)
    np.testing.assert_array_equal(kept, reference)
    ours.set_train(False)
    np.testing.assert_array_equal(ours(ms.Tensor(x)).asnumpy(), x)  # inference keeps all
    ours.set_train(True)
    assert ours(ms.Tensor(x)).shape == (3, 7, 8)


def test_fixed_sin_cos_position_table_is_maes():
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    from mindclip.models.patch import sincos_2d_position_embedding

    np.testing.assert_allclose(sincos_2d_position_embedding(64, 5),
                               get_2d_sincos_pos_embed(64, 5, cls_token=True), atol=1e-6)
    model = create_model(config=EXTRA_OPTIONS)
    table = model.visual.positional_embedding
    assert not table.requires_grad
    np.testing.assert_allclose(table.asnumpy(), get_2d_sincos_pos_embed(64, 4, cls_token=True), atol=1e-6)


def test_unimplemented_and_invalid_options_are_refused_by_name():
    from mindclip.models.config import CLIPConfig

    with pytest.raises(ValueError, match="unknown key.*'qk_norm'"):
        CLIPConfig.from_dict({"vision_cfg": {"qk_norm": True}})
    with pytest.raises(ValueError, match="pool_type 'max'"):
        CLIPConfig.from_dict({"text_cfg": {"pool_type": "max"}})
    with pytest.raises(ValueError, match="ignores it"):
        CLIPConfig.from_dict({"text_cfg": {"final_ln_after_pool": True}})
    with pytest.raises(ValueError, match="ViT options"):
        CLIPConfig.from_dict({"vision_cfg": {"layers": [1, 1, 1, 1], "no_ln_pre": True}})
    with pytest.raises(ValueError, match="unsupported key"):
        CLIPConfig.from_dict({"vision_cfg": {"norm_kwargs": {"elementwise_affine": False}}})


def test_clipa_layout_trains_with_lit_and_patch_dropout_and_evaluates(tmp_path):
    """A non-OpenAI layout (CLIPA's: avg pool, final LN after pooling, no ln_pre, bidirectional
    text pooled at the last token) through the training loop, LiT-locked except its last
    group, with FLIP patch dropout; then zero-shot evaluation."""
    from mindclip.config import load_config
    from mindclip.trainer import Trainer

    def trainer(out, **runner):
        cfg = load_config(None, {"output_dir": str(out), "model.name": "ViT-Tiny-8-CLIPA",
                                 "train_dataset.type": "digits_captions", "train_dataset.num_samples": 64,
                                 "eval_dataset.type": "digits", "eval_dataset.split": "test",
                                 "eval_dataset.num_samples": 40, "runner.batch_size": 16,
                                 "runner.progress_bar": False, "runner.lock_image": True,
                                 "runner.lock_image_unlocked_groups": 1,
                                 **{f"runner.{k}": v for k, v in runner.items()}})
        return Trainer(config=cfg)

    ms.set_seed(0)
    run = trainer(tmp_path / "flip", force_patch_dropout=0.5)
    before = {k: p.asnumpy().copy() for k, p in run.model.parameters_dict().items()}
    summary = run.train()
    assert run.model.visual.patch_dropout.prob == 0.5
    after = {k: p.asnumpy() for k, p in run.model.parameters_dict().items()}
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert np.isfinite(summary["final_loss"])
    assert "visual.conv1.weight" not in changed and "visual.transformer.resblocks.0.attn.in_proj.weight" not in changed
    assert {"visual.proj", "visual.ln_post.gamma", "text.text_projection"} <= changed
    metrics = run.evaluate()
    assert metrics["num_samples"] == 40 and 0.0 <= metrics["top1"] <= 100.0

    ms.set_seed(0)
    plain = trainer(tmp_path / "plain").train()  # same data and init, every patch kept
    assert plain["final_loss"] != summary["final_loss"]


def test_clipa_layout_through_run_mindformer(tmp_path):
    import run_mindformer
    from mindclip.training.logger import read_metrics

    out = str(tmp_path / "cli")
    config = tmp_path / "run_clipa_tiny_digits.yaml"
    config.write_text(
        "model:\n  name: ViT-Tiny-8-CLIPA\n"
        "train_dataset:\n  type: digits_captions\n  num_samples: 64\n"
        "eval_dataset:\n  type: digits\n  split: test\n  num_samples: 40\n"
        "runner:\n  epochs: 1\n  batch_size: 16\n  progress_bar: false\n  force_patch_dropout: 0.3\n")
    assert run_mindformer.main(["--config", str(config), "--run_mode", "train", "--output_dir", out]) == 0
    assert len(read_metrics(os.path.join(out, "metrics.jsonl"), "train")) == 4
    assert run_mindformer.main(["--config", str(config), "--run_mode", "eval", "--output_dir", out,
                                "--load_checkpoint", out]) == 0
    with open(os.path.join(out, "eval_metrics.json")) as f:
        assert json.load(f)["num_samples"] == 40


def test_readme_zoo_table_is_generated_from_the_code():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
    import zoo_table

    assert zoo_table.main(["--check"]) == 0
