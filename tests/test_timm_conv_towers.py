"""open_clip's convolutional, hybrid and hierarchical timm towers (ConvNeXt, ViTamin,
MobileCLIP's FastViT MCi, Swin) against timm + open_clip themselves, each built with random weights here: every option
group of open_clip's configs shrunk (one block a stage, widths divided with their ratios kept,
small images), both conversion directions; the smallest full-size model of each in GRAPH
mode (MobileCLIP2-S0 fused too); one block of each kind, values and gradients, on both
convolution paths (the fused CPU kernels and MindSpore's grouped Conv2D); FastViT's fusion
against timm's and its BatchNorm in training. Helpers are tests/test_timm_towers.py's.
"""
import dataclasses
import json
import os

import mindspore as ms
import numpy as np
import pytest
import torch

import mindclip
from conftest import FEATURE_ATOL
from mindclip import create_model
from mindclip.convert.naming import timm_trunk_name_to_torch
from mindclip.models.timm import timm_arch
from mindclip.models.timm.convnext import ConvNeXtArch
from test_openclip_zoo import OPENCLIP_CONFIGS
from test_timm_towers import (GROUPS, _load_torch, _randomised, _Weighted, check_full_size,
                              check_option_group, is_conv_group, shrink_timm, tiny_timm)


@pytest.mark.parametrize("key", sorted(k for k in GROUPS if is_conv_group(k)), ids=lambda k: GROUPS[k])
def test_conv_option_group_converts_both_ways_with_open_clips_features(key, tmp_path):
    check_option_group(GROUPS[key], tmp_path)


@pytest.mark.parametrize("name,size", [("convnext_tiny", 224), ("ViTamin-S", 224), ("MobileCLIP2-S0", 256),
                                       ("swin_base_patch4_window7_224", 224)])
def test_smallest_full_size_model_of_each_conv_trunk_in_graph_mode(name, size):
    check_full_size(name, size)


def _use_kernels(cell, fused: bool) -> None:
    """Run ``cell``'s convolutions and norms on the CPU kernels, or MindSpore's own ops."""
    for _, inner in cell.cells_and_names():
        if hasattr(inner, "fused") and not fused:
            inner.fused = False


@pytest.mark.parametrize("fused", [True, False], ids=["cpu-kernel", "grouped-conv2d"])
def test_convnext_block_values_and_gradients_equal_timms(fused):
    """timm's ``ConvNeXtBlock`` on a map that is not square, a width not a multiple of the
    kernel's channel block: outputs, the input's and every parameter's gradient (the
    depthwise convolution's fused backward), and its other path (MindSpore's grouped Conv2D,
    what Ascend/GPU and exported MindIR run)."""
    from timm.models.convnext import ConvNeXtBlock as TimmBlock

    from mindclip.models.timm.convnext import ConvNeXtBlock

    width = 40
    ours = ConvNeXtBlock(ConvNeXtArch(depths=(1,), dims=(width,)), width, 0.0)
    ours.conv_dw.fused = ours.conv_dw.fused and fused
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, width, 9, 6)).astype(np.float32)
    _check_block(ours, _randomised(TimmBlock(width, ls_init_value=0.5)), x, rng, "ConvNeXtBlock")


@pytest.mark.parametrize("fused", [True, False], ids=["cpu-kernel", "grouped-conv2d"])
def test_vitamin_conv_blocks_values_and_gradients_equal_timms(fused):
    """timm's strided ``MbConvLNBlock`` (average-pool + 1x1 shortcut, depthwise 3x3 at stride
    2) and ``StridedConv`` (LayerNorm + 3x3/2 convolution as im2col + matmul): outputs, input
    and parameter gradients, on both paths of the depthwise and pooling sums."""
    from timm.models.vitamin import MbConvLNBlock as TimmMbConv
    from timm.models.vitamin import StridedConv as TimmStrided

    from mindclip.models.timm.vitamin import MbConvLNBlock, StridedConv

    size = 10
    pairs = [(MbConvLNBlock(16, 24, 2, size, 0.0), TimmMbConv(16, 24, stride=2)),
             (StridedConv(16, 40, size), TimmStrided(stride=2, in_chans=16, embed_dim=40))]
    rng = np.random.default_rng(5)
    for ours, ref in pairs:
        _use_kernels(ours, fused)
        x = rng.standard_normal((2, 16, size, size)).astype(np.float32)
        _check_block(ours, _randomised(ref), x, rng, type(ours).__name__)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_swin_blocks_values_and_gradients_equal_timms(mode):
    """timm's ``SwinTransformerBlock`` with shifted windows (the region mask, the roll both
    ways), unshifted, clamped to a map no larger than the window, and ``PatchMerging``:
    outputs, the input's and every parameter's gradient (the relative position table too),
    in both modes (the train step's backward is compiled)."""
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        _check_swin_blocks()
    finally:
        ms.set_context(mode=previous)


def _check_swin_blocks():
    from timm.models import swin_transformer as ts

    from mindclip.models.timm import swin

    arch = dataclasses.replace(timm_arch("swin_base_patch4_window7_224"), window_size=4)
    rng = np.random.default_rng(7)
    cases = [("shifted", swin.SwinTransformerBlock(arch, 64, 2, 8, True, 0.0),
              ts.SwinTransformerBlock(64, (8, 8), num_heads=2, window_size=4, shift_size=2), 8, 64),
             ("unshifted", swin.SwinTransformerBlock(arch, 64, 2, 8, False, 0.0),
              ts.SwinTransformerBlock(64, (8, 8), num_heads=2, window_size=4, shift_size=0), 8, 64),
             ("one window", swin.SwinTransformerBlock(arch, 64, 2, 3, True, 0.0),
              ts.SwinTransformerBlock(64, (3, 3), num_heads=2, window_size=4, shift_size=2), 3, 64),
             ("merging", swin.PatchMerging(32, 8, 1e-5), ts.PatchMerging(32), 8, 32)]
    for name, ours, ref, size, dim in cases:
        x = rng.standard_normal((2, size, size, dim)).astype(np.float32)
        _check_block(ours, _randomised(ref), x, rng, name, to_ours=_tokens)


def test_swin_keeps_timms_stochastic_depth_and_layer_groups():
    """open_clip's Swin config sets no ``timm_drop_path``: timm's default 0.1 applies, rising
    over the blocks; LiT's layer groups are timm's ``group_matcher`` (a stage's merging in its
    first block's group)."""
    from open_clip.model import CLIP
    from timm.models._manipulate import group_parameters

    from mindclip.models.rng import DropPath, is_rng_state

    with open(os.path.join(OPENCLIP_CONFIGS, "swin_base_patch4_window7_224.json")) as f:
        cfg = shrink_timm(json.load(f))
    ref = CLIP(**cfg).visual.trunk
    model = create_model(config=cfg)
    rates = [float(getattr(b.drop_path1, "drop_prob", 0.0)) for st in ref.layers for b in st.blocks]
    ours = [b.drop_path1.keep if isinstance(b.drop_path1, DropPath) else 1.0
            for st in model.visual.trunk.layers for b in st.blocks]
    assert max(rates) == pytest.approx(0.1) and np.allclose([1 - k for k in ours], rates)
    groups = group_parameters(ref, ref.group_matcher())
    want = [sorted(names) for _, names in sorted(groups.items())]
    got = [sorted(timm_trunk_name_to_torch(p.name)[len("visual.trunk."):]
                  for cell in group for p in cell.get_parameters() if not is_rng_state(p.name))
           for group in model.visual.trunk.lock_groups()]
    assert got == want


def _randomised_bn(module):
    """timm module with random weights and BatchNorm statistics (not the identity's 0 / 1)."""
    module = _randomised(module)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn_like(buf))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand_like(buf))
    return module


def _nhwc(a):
    return a.transpose(0, 2, 3, 1)


def _tokens(a):
    """A timm Swin map ``(B, H, W, C)`` as our row-major tokens ``(B, H*W, C)``."""
    return a.reshape(a.shape[0], -1, a.shape[-1])


def _check_block(ours, ref, x, rng, name, to_ours=_nhwc):
    """Outputs, input gradient and every parameter's gradient of our Cell against a timm
    module (both in inference mode); ``to_ours`` turns an array of timm's layout into ours
    (channels first -> channels last by default)."""
    _load_torch(ours, ref)
    ours.set_train(False)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = ref(xt)
    w = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    (out * torch.from_numpy(w)).sum().backward()
    x_ours = ms.Tensor(to_ours(x))
    got = ours(x_ours).asnumpy()
    assert np.abs(got - to_ours(out.detach().numpy())).max() <= FEATURE_ATOL, name
    net = _Weighted(ours, ms.Tensor(to_ours(w)))
    params = net.trainable_params()
    dx, grads = ms.grad(net, grad_position=0, weights=params)(x_ours)
    assert np.abs(dx.asnumpy() - to_ours(xt.grad.numpy())).max() <= 1e-4, name
    want = {k: v.grad.numpy() for k, v in ref.named_parameters()}
    assert len(params) == len(want), name
    for p, g in zip(params, grads):
        expected = want[timm_trunk_name_to_torch(p.name)[len("cell."):]]
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(g.asnumpy() - expected).max() <= 1e-4 * scale, (name, p.name)


@pytest.mark.parametrize("fused", [True, False], ids=["cpu-kernel", "grouped-conv2d"])
def test_fastvit_blocks_values_gradients_and_fusion_equal_timms(fused):
    """timm's FastViT pieces with random BatchNorm statistics: the stem's dense 3x3/2
    MobileOne block, a depthwise one with squeeze-excite and two outputs per channel
    (``final_conv``), the large-kernel downsampling, a RepMixer block and an attention block:
    outputs and gradients; then each reparameterized (timm's fusion of the branches) equal
    to timm's fused module."""
    from timm.models import fastvit as tf

    from mindclip.models.timm import fastvit as ours_fv

    rng = np.random.default_rng(6)
    arch = dataclasses.replace(timm_arch("fastvit_mci0"), layers=(1,), embed_dims=(64,))
    size = 8
    cases = [
        ("stem", ours_fv.MobileOneBlock(3, 16, 3, 2, 1, size), tf.MobileOneBlock(3, 16, 3, stride=2), 3),
        ("final_conv", ours_fv.MobileOneBlock(16, 32, 3, 1, 16, size, use_se=True),
         tf.MobileOneBlock(16, 32, 3, group_size=1, use_se=True), 16),
        ("downsample", ours_fv.PatchEmbed(16, 32, size, True),
         tf.PatchEmbed(7, 2, 16, 32, lkc_use_act=True, use_se=True), 16),
        ("repmixer", ours_fv.RepMixerBlock(arch, 32, 3.0, size, 0.0), tf.RepMixerBlock(32, mlp_ratio=3.0), 32),
        ("attention", ours_fv.AttentionBlock(arch, 64, 3.0, size, 0.0), tf.AttentionBlock(64, mlp_ratio=3.0), 64)]
    for name, ours, ref, cin in cases:
        _use_kernels(ours, fused)
        ref = _randomised_bn(ref)
        x = rng.standard_normal((2, cin, size, size)).astype(np.float32)
        _check_block(ours, ref, x, rng, name)
        for module in ref.modules():
            if hasattr(module, "reparameterize"):
                module.reparameterize()
        mindclip.reparameterize_model(ours)
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
        got = ours(ms.Tensor(x.transpose(0, 2, 3, 1))).asnumpy()
        assert np.abs(got - want).max() <= FEATURE_ATOL, (name, "fused")


def test_fastvit_batchnorm_trains_and_locks_as_open_clips():
    """A training forward normalises by the batch and moves the running statistics as
    PyTorch's BatchNorm2d (momentum 0.1, unbiased variance); a locked FastViT tower keeps
    them (stays in eval mode), as open_clip's ResNet rule."""
    from timm.models import fastvit as tf

    from mindclip.models.timm import fastvit as ours_fv

    ours, ref = ours_fv.MobileOneBlock(8, 8, 3, 1, 8, 6), _randomised_bn(tf.MobileOneBlock(8, 8, 3, group_size=1))
    _load_torch(ours, ref)
    x = np.random.default_rng(7).standard_normal((3, 8, 6, 6)).astype(np.float32)
    ref.train()
    ours.set_train(True)
    want = ref(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    got = ours(ms.Tensor(x.transpose(0, 2, 3, 1))).asnumpy()
    assert np.abs(got - want).max() <= FEATURE_ATOL
    for name, buf in ref.named_buffers():
        if "running" in name:
            ms_name = name
            value = ours.parameters_dict()[ms_name].asnumpy()
            assert np.abs(value - buf.numpy()).max() <= 1e-5, name

    cfg = {"embed_dim": 32, "text_cfg": {"width": 64, "heads": 2, "layers": 1, "vocab_size": 100,
                                         "context_length": 8},
           "vision_cfg": {"timm_model_name": tiny_timm("fastvit_mci0"), "image_size": 64,
                          "timm_pool": "avg", "timm_proj": None}}
    model = create_model(config=cfg)
    assert model.visual.keeps_eval_when_locked
    model.lock_image_tower()
    model.set_train(True)
    assert not model.visual.training and model.text.training


def test_fastvit_inference_form_by_default_for_named_weights_training_form_to_save(tmp_path):
    """create_model(pretrained=...) fuses (MobileCLIP's README does), unless told not to;
    from_pretrained and the Trainer keep the training form; a fused model refuses to be
    saved as a checkpoint, by name."""
    cfg = {"embed_dim": 32, "text_cfg": {"width": 64, "heads": 2, "layers": 1, "vocab_size": 100,
                                         "context_length": 8},
           "vision_cfg": {"timm_model_name": tiny_timm("fastvit_mci0"), "image_size": 64,
                          "timm_pool": "avg", "timm_proj": None}}
    model = create_model(config=cfg)
    assert not any("reparam_conv" in k for k in model.parameters_dict())
    saved = model.save_pretrained(str(tmp_path / "m"))
    fused = create_model(pretrained=saved)
    assert any("reparam_conv" in k for k in fused.parameters_dict())
    images = np.random.default_rng(8).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert np.abs(fused.encode_image(images).asnumpy() - model.encode_image(images).asnumpy()).max() <= FEATURE_ATOL
    kept = create_model(pretrained=saved, reparameterize=False)
    assert not any("reparam_conv" in k for k in kept.parameters_dict())
    assert not any("reparam_conv" in k for k in mindclip.CLIPModel.from_pretrained(saved).parameters_dict())
    with pytest.raises(ValueError, match="reparameterized for inference.*reparameterize=False"):
        fused.save_pretrained(str(tmp_path / "again"))
