"""open_clip's timm image towers (EVA01, EVA02, PE-Core, the CLIP ViT-L/14 of MobileCLIP2-L-14,
ViT-medium GAP, the relative-position ViT; the convolutional and hybrid ones in
tests/test_timm_conv_towers.py, with the helpers here) against timm + open_clip themselves, each built with random weights here.

The option groups are derived from the configs installed with open_clip (SigLIP's timm ViTs
are tested in tests/test_siglip.py): every group is shrunk in depth (2 blocks, 2 heads of the
trunk's head width, the smallest image its patch and RoPE take), ratios, activations, pools and
projections kept, converted from an open_clip Hub folder and back. The smallest full-size model
of each trunk kind runs once in GRAPH mode. The pieces the blocks are made of (2-D RoPE on a
grid that is not square, SwiGLU, GluMlp, q/k norms) are checked alone against timm's.
"""
import copy
import functools
import dataclasses
import json
import os

import mindspore as ms
import numpy as np
import open_clip
import pytest
import torch

from conftest import FEATURE_ATOL
import mindclip
from mindclip import create_model, get_model_config, list_models
from mindclip.models.exceptions import MissingTowerError
from mindclip.models.patch import PatchDropout
from mindclip.models.timm import register_timm_model, timm_arch, timm_model_names
from mindclip.models.timm.convnext import ConvNeXtArch
from mindclip.models.timm.fastvit import FastVitArch
from mindclip.models.timm.swin import SwinArch
from mindclip.models.timm.vitamin import ViTaminArch
from test_openclip_zoo import OPENCLIP_CONFIGS, _openclip_configs, check_round_trip, perturbed

SIZE_FIELDS = {"width", "layers", "heads", "image_size", "patch_size", "ref_grid", "depths", "dims",
               "stem_width", "conv_dims", "conv_depths", "embed_dims"}
TEXT_SIZES = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio",
              "hf_tokenizer_name", "tokenizer_kwargs"}


def _timm_configs():
    """open_clip's configs with a timm tower mindclip builds, SigLIP's left to its own tests."""
    for name, cfg in _openclip_configs():
        timm_name = cfg["vision_cfg"].get("timm_model_name")
        if timm_name and cfg.get("init_logit_bias") is None and timm_name in timm_model_names():
            yield name, cfg


def _signature(cfg):
    arch = timm_arch(cfg["vision_cfg"]["timm_model_name"])
    trunk = {k: v for k, v in dataclasses.asdict(arch).items() if k not in SIZE_FIELDS}
    if hasattr(arch, "heads"):
        trunk["head_width"] = arch.width // arch.heads
    vision = {k: v for k, v in cfg["vision_cfg"].items() if k not in ("timm_model_name", "image_size")}
    text = {k: v for k, v in cfg["text_cfg"].items() if k not in TEXT_SIZES}
    return json.dumps([type(arch).__name__, trunk, vision, text], sort_keys=True)


def timm_groups():
    groups = {}
    for name, cfg in _timm_configs():
        groups.setdefault(_signature(cfg), name)
    return groups


GROUPS = timm_groups()


def _shrunk(arch, depth: int):
    """``(timm's overrides, our architecture)`` of a shrunk trunk. ViT-shaped: ``depth``
    blocks, two heads of its head width, images of two patches a side (three for PE-Core's
    offset grid). ConvNeXt: one block a stage (``depth`` in the third), widths an eighth
    (their ratios kept), 64-pixel images (a 2x2 last map). Swin: two blocks a stage (a
    shifted one; ``depth`` in the third), a quarter of the width with heads of its head
    width, 4x4 windows on 64-pixel images (maps of 16, 8, 4, 2: shifted windows in the first
    two stages, one window in the last two, as timm clamps them)."""
    if isinstance(arch, SwinArch):
        head = arch.embed_dim // arch.num_heads[0]
        depths, embed = (2, 2, depth, 2), arch.embed_dim // 4
        heads = tuple(embed * 2 ** i // head for i in range(4))
        return (dict(depths=depths, embed_dim=embed, num_heads=heads, window_size=4, img_size=64),
                dataclasses.replace(arch, depths=depths, embed_dim=embed, num_heads=heads, window_size=4,
                                    image_size=64))
    if isinstance(arch, FastVitArch):  # widths a quarter: attention stages keep heads of 32
        layers = tuple(depth if i == 2 else 1 for i in range(len(arch.layers)))
        dims = tuple(d // 4 for d in arch.embed_dims)
        return (dict(layers=layers, embed_dims=dims),
                dataclasses.replace(arch, layers=layers, embed_dims=dims, image_size=64))
    if isinstance(arch, ConvNeXtArch):
        depths, dims = (1, 1, depth, 1), tuple(d // 8 for d in arch.dims)
        return dict(depths=depths, dims=dims), dataclasses.replace(arch, depths=depths, dims=dims, image_size=64)
    head = arch.width // arch.heads
    size = (3 if arch.pool_heads else 2) * arch.patch_size
    # a conv embedding's widths are fixed in timm's entry point: such a trunk keeps its width
    conv_embed = getattr(arch, "stem", ()) or isinstance(arch, ViTaminArch)
    width, heads = (arch.width, arch.heads) if conv_embed else (2 * head, 2)
    return (dict(depth=depth, embed_dim=width, num_heads=heads, img_size=size),
            dataclasses.replace(arch, width=width, layers=depth, heads=heads, image_size=size))


def tiny_timm(name: str, depth: int = 2) -> str:
    """timm model ``name`` shrunk (:func:`_shrunk`) and registered under one new name in timm
    (what open_clip builds) and in mindclip; every other argument is the name's own."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    overrides, ours = _shrunk(timm_arch(name), depth)
    tiny = f"mctest_{name}_d{depth}"
    if tiny not in _model_entrypoints:
        original = _model_entrypoints[name]

        def entry(pretrained=False, **kwargs):
            return original(pretrained=pretrained, **dict(overrides, **kwargs))

        entry.__name__ = tiny
        register_model(entry)
    register_timm_model(tiny, ours)
    return tiny


def shrink_timm(cfg):
    cfg = copy.deepcopy(cfg)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    v["timm_model_name"] = tiny_timm(v["timm_model_name"])
    v["image_size"] = timm_arch(v["timm_model_name"]).image_size
    head = t["width"] // t["heads"]
    t.update(layers=2, heads=2, width=2 * head, vocab_size=1000)
    cfg["embed_dim"] = 32
    return cfg


def test_every_timm_config_of_these_groups_is_built():
    names = {name for name, _ in _timm_configs()}
    expected = {"EVA01-g-14", "EVA01-g-14-plus", "EVA02-B-16", "EVA02-L-14", "EVA02-L-14-336",
                "EVA02-E-14", "EVA02-E-14-plus", "PE-Core-T-16-384", "PE-Core-S-16-384",
                "PE-Core-B-16", "PE-Core-L-14-336", "PE-Core-bigG-14-448", "MobileCLIP2-L-14",
                "MobileCLIP-B", "MobileCLIP2-B", "vit_medium_patch16_gap_256",
                "vit_relpos_medium_patch16_cls_224", "convnext_tiny", "convnext_small", "convnext_base",
                "convnext_base_w", "convnext_base_w_320", "convnext_large", "convnext_large_d",
                "convnext_large_d_320", "convnext_xlarge", "convnext_xxlarge", "convnext_xxlarge_320",
                "ViTamin-S", "ViTamin-S-LTT", "ViTamin-B", "ViTamin-B-LTT", "ViTamin-L", "ViTamin-L-256",
                "ViTamin-L-336", "ViTamin-L-384", "ViTamin-L2", "ViTamin-L2-256", "ViTamin-L2-336",
                "ViTamin-L2-384", "ViTamin-XL-256", "ViTamin-XL-336", "ViTamin-XL-384",
                "MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP2-S0", "MobileCLIP2-S2", "MobileCLIP2-S3",
                "MobileCLIP2-S4", "swin_base_patch4_window7_224"}
    assert expected <= names <= set(list_models())
    assert get_model_config("PE-Core-bigG-14-448").vision_cfg.arch.width == 1536
    assert len(GROUPS) >= 6


# the convolutional and hybrid trunks' groups and blocks: tests/test_timm_conv_towers.py
# (a file per pytest-xdist worker: the two files run side by side)
CONV_ARCHS = (ConvNeXtArch, ViTaminArch, FastVitArch, SwinArch)


def is_conv_group(key) -> bool:
    return json.loads(key)[0] in {a.__name__ for a in CONV_ARCHS}


def check_option_group(name, tmp_path):
    """open_clip's config ``name`` shrunk, converted from its Hub folder and back."""
    with open(os.path.join(OPENCLIP_CONFIGS, name + ".json")) as f:
        cfg = shrink_timm(json.load(f))
    model = check_round_trip(cfg, "shrunk-" + name, tmp_path)
    assert model.family == "clip"


@pytest.mark.parametrize("key", sorted(k for k in GROUPS if not is_conv_group(k)), ids=lambda k: GROUPS[k])
def test_timm_option_group_converts_both_ways_with_open_clips_features(key, tmp_path):
    check_option_group(GROUPS[key], tmp_path)


# open_clip's TimmModel heads no config of these groups uses, on the trunks that take them
HEADS = [("eva02_base_patch16_clip_224", {"timm_pool": "avg", "timm_proj": "mlp", "timm_proj_bias": True}),
         ("eva_giant_patch14_224", {"timm_pool": "", "timm_proj": "linear", "timm_proj_bias": True}),
         ("vit_pe_core_tiny_patch16_384", {"timm_pool": "token", "timm_proj": "linear"}),
         ("vit_medium_patch16_gap_256", {"timm_pool": "avg", "timm_proj": None})]


@pytest.mark.parametrize("trunk,head", HEADS, ids=[f"{t}-{h['timm_pool'] or 'default'}-{h['timm_proj']}"
                                                   for t, h in HEADS])
def test_timm_heads_equal_open_clips(trunk, head, tmp_path):
    with open(os.path.join(OPENCLIP_CONFIGS, "EVA02-B-16.json")) as f:
        cfg = json.load(f)
    cfg["vision_cfg"] = dict(timm_model_name=trunk, image_size=timm_arch(trunk).image_size, **head)
    check_round_trip(shrink_timm(cfg), f"head-{trunk}", tmp_path)


@pytest.mark.parametrize("name,size", [("EVA02-B-16", 224), ("PE-Core-T-16-384", 384), ("MobileCLIP-B", 224)])
def test_smallest_full_size_model_of_each_trunk_kind_in_graph_mode(name, size):
    """EVA02 (separate q/k/v, RoPE on a 16x16 reference grid, SwiGLU, sub-LN), PE-Core
    (fused q/k/v, RoPE with an offset xy grid, MAP head with its own heads) and MobileCLIP's
    MCi (conv stem with BatchNorm, positions not over the class token) at full size."""
    check_full_size(name, size)


def check_full_size(name, size):
    """open_clip's ``name`` at full size against ours in GRAPH mode, renamed in memory by the
    converter (file round trips run on the shrunk groups); a reparameterizable tower fused too."""
    from conftest import build_for_loading, load_openclip_state

    torch.manual_seed(0)
    reference = perturbed(open_clip.create_model(name), scale=0.02)  # full size: smaller steps
    model = build_for_loading(name)
    load_openclip_state(model, reference, "clip")
    images = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    tokens = open_clip.get_tokenizer(name)(["a photo of a cat", "a diagram"]).numpy()
    with torch.no_grad():
        want = (reference.encode_image(torch.from_numpy(images)).numpy(),
                reference.encode_text(torch.from_numpy(tokens)).numpy())
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        model.set_train(False)
        got = (model.encode_image(images).asnumpy(), model.encode_text(tokens.astype(np.int32)).asnumpy())
    finally:
        ms.set_context(mode=previous)
    for what, a, b in zip(("image", "text"), got, want):
        assert np.abs(a - b).max() <= FEATURE_ATOL, (what, float(np.abs(a - b).max()))
    if isinstance(get_model_config(name).vision_cfg.arch, FastVitArch):  # fused, as MobileCLIP's README does
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            fused = mindclip.reparameterize_model(model).encode_image(images).asnumpy()
        finally:
            ms.set_context(mode=previous)
        assert any("reparam_conv" in k for k in model.parameters_dict())
        assert np.abs(fused - want[0]).max() <= FEATURE_ATOL
        assert np.abs(fused - got[0]).max() > 0  # the fused graph ran, not the branched one


@pytest.mark.parametrize("grid,ref,offset,indexing", [
    ((3, 5), (16, 16), 0.0, "ij"),   # EVA02: rescaled to its reference grid
    ((4, 7), (24, 24), 1.0, "xy"),   # PE-Core: offset grid, x before y
    ((2, 6), None, 0.0, "ij")])
def test_rope_tables_and_rotation_equal_timms_on_a_grid_that_is_not_square(grid, ref, offset, indexing):
    """The tables, and the rotation with its gradient, both ways it runs: the fused CPU kernel
    and MindSpore's ops (what other backends run)."""
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat, apply_rot_embed_cat

    from mindclip.models.timm.layers import ApplyRope, rope_tables

    head_dim, heads, prefix = 32, 3, 1
    emb = RotaryEmbeddingCat(dim=head_dim, in_pixels=False, feat_shape=list(grid), ref_feat_shape=ref,
                             grid_offset=offset, grid_indexing=indexing).get_embed()
    n = grid[0] * grid[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, prefix + n, heads * head_dim)).astype(np.float32)
    weights = rng.standard_normal(x.shape).astype(np.float32)
    t = torch.from_numpy(x).requires_grad_(True)
    per_head = t.reshape(2, prefix + n, heads, head_dim).transpose(1, 2)
    want = torch.cat([per_head[:, :, :prefix], apply_rot_embed_cat(per_head[:, :, prefix:], emb)], dim=2)
    want = want.transpose(1, 2).reshape(2, prefix + n, heads * head_dim)
    (want * torch.from_numpy(weights)).sum().backward()
    cos, sin = (ms.Tensor(a) for a in rope_tables(grid, head_dim, heads, prefix, ref_grid=ref,
                                                   grid_offset=offset, grid_indexing=indexing))
    rope = ApplyRope()
    assert rope.fused  # the CPU kernel is what runs here
    for fused in (True, False):
        rope.fused = fused
        got = rope(ms.Tensor(x), cos, sin).asnumpy()
        assert np.abs(got - want.detach().numpy()).max() <= 1e-5, fused
        grad = ms.grad(_Weighted(rope, cos, sin, ms.Tensor(weights)))(ms.Tensor(x)).asnumpy()
        assert np.abs(grad - t.grad.numpy()).max() <= 1e-5, fused


class _Weighted(ms.nn.Cell):
    """``sum(cell(x, *args) * weights)``: a scalar to differentiate in either mode."""

    def __init__(self, cell, *args_and_weights):
        super().__init__()
        self.cell = cell
        self.args = args_and_weights[:-1] if args_and_weights else ()
        self.weights = args_and_weights[-1] if args_and_weights else None

    def construct(self, x):
        y = self.cell(x, *self.args)
        return (y * self.weights).sum() if self.weights is not None else y.sum()


def _load_torch(ours, ref):
    """Copy a timm module's weights into our Cell of the same names (norms' suffixes aside)."""
    from mindclip.convert.naming import align_names
    from mindclip.models.rng import is_rng_state, weight_parameters

    state = align_names({k: v.detach().numpy() for k, v in ref.state_dict().items()
                         if not k.endswith("num_batches_tracked")}, weight_parameters(ours))
    missing, unexpected = ms.load_param_into_net(
        ours, {k: ms.Parameter(ms.Tensor(v)) for k, v in state.items()}, strict_load=True)
    assert not [k for k in missing if not is_rng_state(k)] and not unexpected


def _randomised(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.eval()


def test_swiglu_glumlp_and_qk_norm_attention_equal_timms():
    from timm.layers import GluMlp as TimmGlu
    from timm.layers import SwiGLU as TimmSwiGLU
    from timm.layers.attention import AttentionRope

    from mindclip.models.timm.layers import Attention, GluMlp, SwiGLU

    x = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
    pairs = [(SwiGLU(64, 96, 1e-6), TimmSwiGLU(64, 96, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))),
             (GluMlp(64, 192), TimmGlu(64, 192, act_layer=torch.nn.SiLU, gate_last=False)),
             (Attention(64, 4, qk_norm=True, scale_norm=True, norm_eps=1e-6),
              AttentionRope(64, 4, qk_norm=True, scale_norm=True,
                            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)))]
    for ours, ref in pairs:
        ref = _randomised(ref)
        _load_torch(ours, ref)
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy()
        assert np.abs(ours(ms.Tensor(x)).asnumpy() - want).max() <= FEATURE_ATOL, type(ours).__name__

    from mindclip.models.layers import make_activation

    v = np.linspace(-12, 12, 4001, dtype=np.float32)
    t = torch.from_numpy(v).requires_grad_(True)
    torch.nn.functional.silu(t).sum().backward()
    silu = make_activation("silu")
    assert silu.fused  # SwiGLU's gate runs the fused CPU kernel
    assert np.abs(silu(ms.Tensor(v)).asnumpy() - torch.nn.functional.silu(t).detach().numpy()).max() <= 1e-6
    grad = ms.grad(_Weighted(silu))(ms.Tensor(v)).asnumpy()
    assert np.abs(grad - t.grad.numpy()).max() <= 1e-5


def test_relpos_block_values_and_gradients_equal_timms_on_a_grid_that_is_not_square():
    """timm's ``RelPosBlock`` (relative log-coordinate MLP bias, class token unbiased, LayerScale):
    outputs, input gradients and every parameter's gradient, the bias MLP's included (the
    attention core's hand-written backward returns the per-head bias gradient)."""
    from timm.layers import RelPosMlp as TimmRelPosMlp
    from timm.models.vision_transformer_relpos import RelPosBlock as TimmRelPosBlock

    from mindclip.models.timm.vit import Block
    from mindclip.models.timm.vit_relpos import RelPosArch, RelPosMlp

    grid, width, heads = (3, 2), 64, 4
    arch = RelPosArch(patch_size=16, width=width, layers=1, heads=heads, qkv_bias=False, rel_pos_dim=16)
    ours = Block(arch, rel_pos=RelPosMlp(grid, heads, 16, prefix_tokens=1))
    ref = _randomised(TimmRelPosBlock(
        width, heads, qkv_bias=False, init_values=1e-6,
        rel_pos_cls=functools.partial(TimmRelPosMlp, window_size=grid, hidden_dim=16, prefix_tokens=1),
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)))
    with torch.no_grad():  # LayerScale at 1e-6 would hide every branch's gradient
        ref.ls1.gamma.fill_(0.7)
        ref.ls2.gamma.fill_(0.4)
    _load_torch(ours, ref)
    ours.set_train(False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1 + 6, width)).astype(np.float32)
    w = rng.standard_normal((2, 1 + 6, width)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = ref(xt)
    (out * torch.from_numpy(w)).sum().backward()
    assert np.abs(ours(ms.Tensor(x)).asnumpy() - out.detach().numpy()).max() <= FEATURE_ATOL
    batched = Block(arch, rel_pos=RelPosMlp(grid, heads, 16, prefix_tokens=1))  # Ascend/GPU's layout
    batched.attn.per_head = False
    _load_torch(batched, ref)
    batched.set_train(False)
    assert np.abs(batched(ms.Tensor(x)).asnumpy() - out.detach().numpy()).max() <= FEATURE_ATOL

    net = _Weighted(ours, ms.Tensor(w))
    params = net.trainable_params()
    dx, grads = ms.grad(net, grad_position=0, weights=params)(ms.Tensor(x))
    assert np.abs(dx.asnumpy() - xt.grad.numpy()).max() <= 1e-4
    from mindclip.convert.naming import align_names

    want = align_names({k: v.grad.numpy() for k, v in ref.named_parameters()},
                       {p.name[len("cell."):]: p for p in params})
    assert {p.name for p in params if "rel_pos" in p.name} == {
        f"cell.attn.rel_pos.mlp.{m}.{t}" for m in ("fc1", "fc2") for t in ("weight", "bias")}
    for p, g in zip(params, grads):
        expected = want[p.name[len("cell."):]]
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(g.asnumpy() - expected).max() <= 1e-4 * scale, p.name


class _FixedPatchDrop(PatchDropout):
    """Patch dropout keeping the patches ``noise`` ranks first (so both sides keep the same)."""

    def __init__(self, prob, prefix_tokens, noise):
        super().__init__(prob, prefix_tokens)
        self.noise = ms.Tensor(noise)

    def indices(self, x):
        return self.indices_of(self.noise)


@pytest.mark.parametrize("trunk", ["eva02_base_patch16_clip_224", "vit_pe_core_tiny_patch16_384"])
def test_patch_dropout_on_rope_trunks_keeps_the_kept_patches_rotary_rows_as_timm(trunk, monkeypatch):
    """A training forward under patch dropout equals timm + open_clip's (``patch_drop_rate``:
    ``PatchDropoutWithIndices`` gathers the RoPE rows of the kept patches) given the same kept
    patches, in their order; timm draws ``torch.randn`` and keeps the smallest."""
    from conftest import load_openclip_state
    from test_openclip_zoo import build_reference

    with open(os.path.join(OPENCLIP_CONFIGS, "EVA02-B-16.json")) as f:
        cfg = json.load(f)
    cfg["vision_cfg"] = dict(timm_model_name=trunk, image_size=timm_arch(trunk).image_size, patch_dropout=0.5)
    cfg = shrink_timm(cfg)
    size, arch = cfg["vision_cfg"]["image_size"], timm_arch(cfg["vision_cfg"]["timm_model_name"])
    patches = (size // arch.patch_size) ** 2
    noise = np.random.default_rng(2).standard_normal((2, patches)).astype(np.float32)
    images = np.random.default_rng(3).standard_normal((2, 3, size, size)).astype(np.float32)

    reference = build_reference(cfg, f"pdrop-{trunk}").train()
    monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.from_numpy(-noise))
    with torch.no_grad():
        want = reference.encode_image(torch.from_numpy(images)).numpy()
    monkeypatch.undo()
    model = create_model(config=cfg)
    load_openclip_state(model, reference, "clip")
    trunk_cell = model.visual.trunk
    trunk_cell.patch_drop = _FixedPatchDrop(0.5, trunk_cell.prefix_tokens, noise)
    model.set_train(True)
    got = model.encode_image(ms.Tensor(images)).asnumpy()
    assert np.abs(got - want).max() <= FEATURE_ATOL
    model.set_train(False)  # and inference keeps every patch: a different result
    assert np.abs(model.encode_image(ms.Tensor(images)).asnumpy() - want).max() > 1e-3


def test_unknown_timm_names_and_options_are_refused_by_name():
    from mindclip.models.config import CLIPConfig

    with pytest.raises(MissingTowerError,
                       match="'swin_tiny_patch4_window7_224' is not implemented.*vitamin_small_224"):
        CLIPConfig.from_dict({"vision_cfg": {"timm_model_name": "swin_tiny_patch4_window7_224"}})
    with pytest.raises(MissingTowerError, match="timm image tower 'vit_nonexistent'"):
        CLIPConfig.from_dict({"vision_cfg": {"timm_model_name": "vit_nonexistent"}})
    base = {"timm_model_name": "eva02_base_patch16_clip_224"}
    with pytest.raises(ValueError, match=r"timm_pool 'max' is not one of \['', 'token', 'avg', 'map'\]"):
        CLIPConfig.from_dict({"vision_cfg": dict(base, timm_pool="max")})
    with pytest.raises(ValueError, match=r"timm_proj 'attn' is not one of \['linear', 'mlp', 'none', None\]"):
        CLIPConfig.from_dict({"vision_cfg": dict(base, timm_proj="attn")})
    with pytest.raises(ValueError, match="unknown key.*'timm_depth'"):
        CLIPConfig.from_dict({"vision_cfg": dict(base, timm_depth=3)})
    with pytest.raises(ValueError, match="has no class token"):
        CLIPConfig.from_dict({"vision_cfg": {"timm_model_name": "vit_medium_patch16_gap_256",
                                             "image_size": 256, "timm_pool": "token"}})
    with pytest.raises(ValueError, match="takes 224-pixel images"):
        CLIPConfig.from_dict({"vision_cfg": dict(base, image_size=256)})
    with pytest.raises(ValueError, match="cannot add attention pooling"):
        create_model(config={"embed_dim": 32, "vision_cfg": dict(timm_model_name=tiny_timm(base["timm_model_name"]),
                                                                  image_size=32, timm_pool="map")})


def test_timm_tower_trains_with_lit_drop_path_and_patch_dropout():
    """Capabilities asked of the tower: LiT locks the trunk's groups (stem, blocks, rest) but the
    last ``unlocked_groups``; patch dropout keeps the class token and a share of the patches
    in training (no RoPE trunk) and is refused, by name, where RoPE would need it."""
    cfg = {"embed_dim": 32, "text_cfg": {"width": 64, "heads": 2, "layers": 1, "vocab_size": 100,
                                         "context_length": 8},
           "vision_cfg": {"timm_model_name": tiny_timm("vit_large_patch14_clip_224"), "image_size": 28,
                          "timm_pool": "token", "timm_proj": None, "timm_drop_path": 0.1}}
    model = create_model(config=cfg)
    model.lock_image_tower(unlocked_groups=1)
    trainable = {p.name for p in model.trainable_params() if p.name.startswith("visual.")}
    assert trainable == {"visual.trunk.norm.gamma", "visual.trunk.norm.beta", "visual.trunk.head.weight",
                         "visual.trunk.head.bias"}
    model.set_patch_dropout(0.5)
    model.set_train(True)
    tokens = model.visual.trunk.patch_drop(ms.Tensor(np.ones((2, 5, 8), np.float32)))
    assert tokens.shape == (2, 1 + 2, 8)
    images = np.random.default_rng(0).standard_normal((2, 3, 28, 28)).astype(np.float32)
    assert model.visual(ms.Tensor(images)).shape == (2, 32)
    relpos = copy.deepcopy(cfg)
    relpos["vision_cfg"].update(timm_model_name=tiny_timm("vit_relpos_medium_patch16_cls_224"), image_size=32)
    with pytest.raises(ValueError, match="relative-position ViTs.*have no patch dropout"):
        create_model(config=relpos).set_patch_dropout(0.5)
