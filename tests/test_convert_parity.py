"""Conversion from every PyTorch layout, checked against the PyTorch reference outputs.

Reference models are open_clip / Hugging Face models with random weights built here; the
converted MindSpore model must reproduce their features and logits within 1e-4 (fp32).
"""
import json
import os
import struct
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

import mindspore as ms
from conftest import (assert_parity, build_openclip, mindclip_outputs, reference_inputs,
                      reference_outputs)
from mindclip import create_model, get_model_config
from mindclip.convert.cli import main as convert_cli
from mindclip.evaluation.encode import encode_image_batch, encode_texts
from mindclip.factory import get_tokenizer, load_pretrained
from mindclip.models.weights_io import read_safetensors


def write_source(model, name, fmt, directory):
    """Save an open_clip model in one of the layouts users bring; returns the path."""
    state = model.state_dict()
    if fmt == "pt":
        path = os.path.join(directory, "model.pt")
        torch.save(state, path)
    elif fmt == "train_ckpt":  # open_clip's training checkpoint, saved from DDP
        path = os.path.join(directory, "epoch_3.pt")
        torch.save({"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}}, path)
    elif fmt == "safetensors":
        path = os.path.join(directory, "model.safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif fmt == "local_dir":  # open_clip's hub/local-dir layout
        from open_clip.push_to_hf_hub import save_config_for_hf

        path = os.path.join(directory, "local_dir")
        os.makedirs(path)
        save_file({k: v.contiguous() for k, v in state.items()},
                  os.path.join(path, "open_clip_model.safetensors"))
        save_config_for_hf(model, Path(path) / "open_clip_config.json",
                           model_config=get_model_config(name).to_dict())
    elif fmt == "torchscript":  # OpenAI's release format
        path = os.path.join(directory, "openai.pt")
        images, tokens = reference_inputs(model.visual.image_size[0])
        torch.jit.save(torch.jit.trace(model, (images, tokens), check_trace=False), path)
    elif fmt == "mindformers":  # names as MindFormers 1.x's CLIP converter writes them
        path = os.path.join(directory, "mindformers.ckpt")
        items = []
        for key, value in state.items():
            for torch_suffix, ms_suffix in (("in_proj_weight", "in_proj.weight"),
                                            ("in_proj_bias", "in_proj.bias"),
                                            ("token_embedding.weight", "token_embedding.embedding_table")):
                key = key.replace(torch_suffix, ms_suffix)
            if key.split(".")[-2:-1] and key.split(".")[-2] in ("ln_pre", "ln_1", "ln_2", "ln_post", "ln_final"):
                key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
            items.append({"name": key, "data": ms.Tensor(value.numpy())})
        ms.save_checkpoint(items, path)
    else:
        raise ValueError(fmt)
    return path


def convert(src_path, out_path, *extra):
    code = convert_cli(["--torch_path", src_path, "--mindspore_path", out_path, *extra])
    assert code == 0
    return out_path


def zero_parameters(model):
    for p in model.get_parameters():
        p.set_data(ms.ops.zeros_like(p))


@pytest.fixture(scope="module")
def tiny_quickgelu():
    return build_openclip("ViT-Tiny-8-quickgelu", seed=3)


@pytest.fixture(scope="module")
def tiny_ms_model():
    """One compiled mindclip model reused for every format (weights reloaded each time)."""
    return create_model("ViT-Tiny-8-quickgelu")


@pytest.mark.parametrize("fmt", ["pt", "train_ckpt", "safetensors", "local_dir", "torchscript",
                                 "mindformers"])
def test_tiny_vit_every_source_format(tmp_path, tiny_quickgelu, tiny_ms_model, fmt):
    name = "ViT-Tiny-8-quickgelu"
    src = write_source(tiny_quickgelu, name, fmt, str(tmp_path))
    extra = ["--model", name]
    if fmt == "torchscript":
        extra.append("--allow_torchscript")
    out = convert(src, str(tmp_path / "converted.safetensors"), *extra)
    images, tokens = reference_inputs(32)
    zero_parameters(tiny_ms_model)  # a load that silently skipped weights must fail parity
    load_pretrained(tiny_ms_model, out)
    assert_parity(mindclip_outputs(tiny_ms_model, images, tokens),
                  reference_outputs(tiny_quickgelu, images, tokens))
    if fmt == "mindformers":  # MindFormers checkpoints also load directly, unconverted
        zero_parameters(tiny_ms_model)
        load_pretrained(tiny_ms_model, src)
        assert_parity(mindclip_outputs(tiny_ms_model, images, tokens),
                      reference_outputs(tiny_quickgelu, images, tokens))


def test_tiny_pynative_and_unnormalised_features(tmp_path, tiny_openclip):
    out = convert(write_source(tiny_openclip, "ViT-Tiny-8", "pt", str(tmp_path)),
                  str(tmp_path / "tiny.ckpt"), "--model", "ViT-Tiny-8")
    images, tokens = reference_inputs(32, batch=3)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        model = create_model(pretrained=out)  # architecture read from the checkpoint
        assert model.config == get_model_config("ViT-Tiny-8")
        assert_parity(mindclip_outputs(model, images, tokens),
                      reference_outputs(tiny_openclip, images, tokens))
        with torch.no_grad():
            ref_img = tiny_openclip.encode_image(images).numpy()
            ref_txt = tiny_openclip.encode_text(tokens).numpy()
        img = model.encode_image(ms.Tensor(images.numpy())).asnumpy()
        txt = model.encode_text(ms.Tensor(tokens.numpy().astype(np.int32))).asnumpy()
        assert np.abs(img - ref_img).max() <= 1e-4
        assert np.abs(txt - ref_txt).max() <= 1e-4
        unit = model.encode_text(ms.Tensor(tokens.numpy().astype(np.int32)), normalize=True)
        np.testing.assert_allclose(np.linalg.norm(unit.asnumpy(), axis=-1), 1.0, atol=1e-6)
        # The evaluation encoders compile the towers even in PyNative mode (a padded last batch).
        unit_ref = ref_img / np.linalg.norm(ref_img, axis=-1, keepdims=True)
        assert np.abs(encode_image_batch(model, images.numpy(), 2) - unit_ref).max() <= 1e-4
        captions = ["a photo of a cat", "a dog", "two birds"]
        with torch.no_grad():
            ref_cap = tiny_openclip.encode_text(open_clip.get_tokenizer("ViT-B-32")(captions)).numpy()
        ref_cap /= np.linalg.norm(ref_cap, axis=-1, keepdims=True)
        assert np.abs(encode_texts(model, get_tokenizer(model), captions, 2) - ref_cap).max() <= 1e-4
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_vit_b_32_full_size(tmp_path):
    ref = build_openclip("ViT-B-32", seed=5)
    src = write_source(ref, "ViT-B-32", "pt", str(tmp_path))
    # No config anywhere: the architecture is inferred from shapes, the activation given.
    out = convert(src, str(tmp_path / "b32.ckpt"), "--quick_gelu", "false")
    model = create_model("ViT-B-32", pretrained=out)
    images, tokens = reference_inputs(224)
    assert_parity(mindclip_outputs(model, images, tokens), reference_outputs(ref, images, tokens))


def test_rn50_full_size(tmp_path):
    ref = build_openclip("RN50-quickgelu", seed=6)
    src = write_source(ref, "RN50-quickgelu", "local_dir", str(tmp_path))
    out = convert(src, str(tmp_path / "rn50_dir"))  # folder output: weights + config.json
    assert os.path.isfile(os.path.join(out, "config.json"))
    model = create_model("RN50-quickgelu", pretrained=out)
    images, tokens = reference_inputs(224)
    assert_parity(mindclip_outputs(model, images, tokens), reference_outputs(ref, images, tokens))


def test_rn50_shape_inference(tmp_path):
    ref = build_openclip("RN50", seed=7)
    src = write_source(ref, "RN50", "pt", str(tmp_path))
    out = convert(src, str(tmp_path / "rn50.safetensors"), "--quick_gelu", "false")
    _, meta = read_safetensors(out)
    assert json.loads(meta["mindclip_config"]) == get_model_config("RN50").to_dict()


def test_tiny_resnet_parity(tmp_path):
    ref = build_openclip("RN-Tiny", seed=8)
    out = convert(write_source(ref, "RN-Tiny", "safetensors", str(tmp_path)),
                  str(tmp_path / "rn.safetensors"), "--model", "RN-Tiny")
    model = create_model(pretrained=out)
    images, tokens = reference_inputs(64)
    assert_parity(mindclip_outputs(model, images, tokens), reference_outputs(ref, images, tokens))


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_huggingface_clip_folder(tmp_path, act):
    import transformers

    text = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, hidden_act=act)
    vision = dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                  num_attention_heads=3, image_size=48, patch_size=16, hidden_act=act)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=40)
    torch.manual_seed(9)
    hf = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        hf.logit_scale.fill_(2.9)
    hf.save_pretrained(str(tmp_path / "hf"))
    out = convert(str(tmp_path / "hf"), str(tmp_path / "hf.ckpt"))
    model = create_model(pretrained=out)
    assert model.config.quick_gelu == (act == "quick_gelu")
    images, tokens = reference_inputs(48, batch=4)

    def features(out):
        return (out.pooler_output if hasattr(out, "pooler_output") else out).numpy()

    with torch.no_grad():
        ref_img = features(hf.get_image_features(pixel_values=images))
        ref_txt = features(hf.get_text_features(input_ids=tokens))
        ref_logits = hf(input_ids=tokens, pixel_values=images).logits_per_image.numpy()
    img = model.encode_image(ms.Tensor(images.numpy())).asnumpy()
    txt = model.encode_text(ms.Tensor(tokens.numpy().astype(np.int32))).asnumpy()
    assert np.abs(img - ref_img).max() <= 1e-4
    assert np.abs(txt - ref_txt).max() <= 1e-4
    _, _, logits = mindclip_outputs(model, images, tokens)
    assert np.abs(logits - ref_logits).max() <= 1e-4


@pytest.mark.parametrize("name", ["ViT-Tiny-8", "RN-Tiny"])
def test_reverse_conversion_round_trip(tmp_path, name):
    import open_clip
    from safetensors.torch import load_file

    ref = build_openclip(name, seed=10)
    ms_path = convert(write_source(ref, name, "pt", str(tmp_path)), str(tmp_path / "m.ckpt"),
                      "--model", name)
    back = str(tmp_path / "back.safetensors")
    assert convert_cli(["--reverse", "--mindspore_path", ms_path, "--torch_path", back]) == 0
    fresh = build_openclip(name, seed=11)
    fresh.load_state_dict(load_file(back), strict=True)
    images, tokens = reference_inputs(get_model_config(name).vision_cfg.image_size)
    for a, b in zip(reference_outputs(ref, images, tokens), reference_outputs(fresh.eval(), images, tokens)):
        np.testing.assert_array_equal(a, b)
    # folder output in open_clip's local-dir layout loads through open_clip's own factory
    folder = str(tmp_path / "oc_dir")
    assert convert_cli(["--reverse", "--mindspore_path", ms_path, "--torch_path", folder]) == 0
    loaded = open_clip.create_model("local-dir:" + folder).eval()
    for a, b in zip(reference_outputs(ref, images, tokens), reference_outputs(loaded, images, tokens)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype,st_dtype,atol,fmt", [("fp16", "F16", 2e-3, "pt"), ("bf16", "BF16", 2e-2, "pt"),
                                                     ("bf16", "BF16", 2e-2, "safetensors")])
def test_half_precision_outputs(tmp_path, tiny_openclip, dtype, st_dtype, atol, fmt):
    """Half-precision outputs from a pickle (memory-mapped) and from a safetensors source
    (read and written one tensor at a time, the checksum patched into the header last)."""
    src = write_source(tiny_openclip, "ViT-Tiny-8", fmt, str(tmp_path))
    out = convert(src, str(tmp_path / "h.safetensors"), "--model", "ViT-Tiny-8", "--dtype", dtype)
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert header["visual.conv1.weight"]["dtype"] == st_dtype
    ms_half = convert(src, str(tmp_path / "h.ckpt"), "--model", "ViT-Tiny-8", "--dtype", dtype)
    images, tokens = reference_inputs(32)
    ref = reference_outputs(tiny_openclip, images, tokens)
    for path in (out, ms_half):
        model = create_model(pretrained=path)
        ours = mindclip_outputs(model, images, tokens)
        assert_parity(ours[:2], ref[:2], atol=atol)


def test_text_projection_with_bias_from_an_open_clip_folder(tmp_path):
    """open_clip's ``text_cfg.proj_bias`` (a Linear text projection, as DeCLIP's): the
    folder's own config is read and the features match."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    cfg = get_model_config("ViT-Tiny-8-quickgelu").to_dict()
    cfg["text_cfg"]["proj_bias"] = True
    torch.manual_seed(4)
    ref = open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                               text_cfg=cfg["text_cfg"], quick_gelu=True).eval()
    with torch.no_grad():
        ref.text_projection.bias.normal_(0, 0.5)
    ref.visual.image_mean, ref.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    folder = tmp_path / "local_dir"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    save_config_for_hf(ref, folder / "open_clip_config.json", model_config=cfg)
    out = convert(str(folder), str(tmp_path / "bias.safetensors"))
    model = create_model(pretrained=out)
    assert model.config.text_cfg.proj_bias
    images, tokens = reference_inputs(32)
    assert_parity(mindclip_outputs(model, images, tokens), reference_outputs(ref, images, tokens))
