"""Registry, factory front doors and preprocessing equality with open_clip."""
import os

import numpy as np
import pytest
from PIL import Image

import mindclip
import mindclip.data
from mindclip import create_model_and_transforms, list_models

REQUIRED = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "RN50", "RN101", "RN50x4"]


def test_required_architectures_and_twins_listed():
    names = list_models()
    for name in REQUIRED:
        assert name in names and f"{name}-quickgelu" in names
    assert {"clip_vit_b_32", "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14@336"} <= set(
        list_models(include_aliases=True))


@pytest.mark.parametrize("name", REQUIRED)
def test_configs_equal_open_clips(name):
    import open_clip

    ours = mindclip.get_model_config(name).to_dict()
    theirs = open_clip.get_model_config(name)
    assert ours["embed_dim"] == theirs["embed_dim"]
    for section in ("vision_cfg", "text_cfg"):
        for key, value in theirs[section].items():
            assert ours[section][key] == value, (section, key)
    assert mindclip.get_model_config(name + "-quickgelu").quick_gelu is True
    assert open_clip.get_model_config(name + "-quickgelu")["quick_gelu"] is True


def _sample_images():
    from skimage import data

    yield "astronaut", data.astronaut()              # 512x512 RGB
    yield "coffee", data.coffee()                    # 400x600 RGB
    yield "camera", data.camera()                    # 512x512 grayscale
    yield "chelsea_rgba", np.dstack([data.chelsea(), np.full(data.chelsea().shape[:2], 200, np.uint8)])
    yield "tall", data.rocket()                      # 427x640, portrait
    yield "tiny", data.astronaut()[::40, ::60]       # smaller than the crop


@pytest.mark.parametrize("image_size", [32, 224])
def test_eval_transform_equals_open_clip(image_size):
    from open_clip.transform import image_transform as oc_transform

    reference = oc_transform(image_size, is_train=False)
    ours = mindclip.data.image_transform(image_size)
    for name, array in _sample_images():
        pil = Image.fromarray(array)
        expected = reference(pil).numpy()
        got = ours(pil)
        assert got.shape == expected.shape == (3, image_size, image_size), name
        assert np.abs(got - expected).max() <= 1e-5, name


def test_create_model_and_transforms():
    model, train_tf, eval_tf = create_model_and_transforms("ViT-Tiny-8")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    assert eval_tf(img).shape == (3, 32, 32)
    assert train_tf(img).shape == (3, 32, 32)
    assert model.image_size == 32 and model.context_length == 77
    assert not model.training


def test_train_transform_is_seeded_random_resized_crop():
    img = np.random.default_rng(1).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    a = mindclip.data.train_transform(32, seed=5)
    b = mindclip.data.train_transform(32, seed=5)
    first = [a(img) for _ in range(3)]
    np.testing.assert_array_equal(np.stack(first), np.stack([b(img) for _ in range(3)]))
    assert not np.array_equal(first[0], first[1])  # crops differ from call to call


@pytest.mark.parametrize("name", ["ViT-Tiny-8", "ViT-B-32"])
def test_patch_embedding_matmul_equals_conv2d(name):
    """The ViT patch embedding runs as reshape + matmul; it must equal the Conv2d whose
    weights it uses (forward and gradients w.r.t. input and weight) within 1e-5."""
    import mindspore as ms
    from mindspore import ops

    visual = mindclip.create_model(name).visual
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, 3, visual.image_size, visual.image_size)).astype(np.float32))

    def via_conv(images, weight):
        out = ops.conv2d(images, weight, stride=visual.patch_size)
        return out.reshape(out.shape[0], out.shape[1], -1).transpose(0, 2, 1)

    weight = visual.conv1.weight.value()
    ref, ours = via_conv(x, weight).asnumpy(), visual.conv1(x).asnumpy()
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-5
    seed = ms.Tensor(rng.standard_normal(ref.shape).astype(np.float32))

    def conv_loss(images, w):
        return (via_conv(images, w) * seed).sum()

    def matmul_loss(images):
        return (visual.conv1(images) * seed).sum()

    grad_ref = ms.grad(conv_loss, grad_position=(0, 1))(x, weight)
    grad_ours = ms.grad(matmul_loss, grad_position=0, weights=[visual.conv1.weight])(x)
    # Gradients are sums over the batch and the grid (98 terms of magnitude ~1 per weight at
    # B/32): 1e-5 relative to the largest gradient, i.e. a few fp32 ulps of summation order.
    for ours_g, ref_g in ((grad_ours[0], grad_ref[0]), (grad_ours[1][0], grad_ref[1])):
        ref_g = ref_g.asnumpy()
        assert np.abs(ours_g.asnumpy() - ref_g).max() <= 1e-5 * max(1.0, np.abs(ref_g).max())


LAYOUTS = ["fused", "per_head", "batched"]


def _set_layout(attn, layout):
    """CPU's fused attention kernel, its op-by-op per-head form, or Ascend/GPU's batched one."""
    attn.per_head = layout != "batched"
    attn.core.fused = layout == "fused"
    assert attn.core.fused_forward is not None or layout != "fused"  # the kernel was built


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask_rank", [0, 2, 3])
def test_attention_layouts_equal_numpy(layout, mask_rank):
    """The attention layouts (the fused kernel and per head on CPU, batched on Ascend/GPU)
    equal a numpy float64 multi-head attention within 1e-5, with no mask, an (L, L) mask or a
    (B, L, L) mask."""
    import mindspore as ms

    from mindclip.models.layers import MultiheadSelfAttention, causal_mask

    rng = np.random.default_rng(0)
    b, n, width, heads = 3, 7, 16, 4
    attn = MultiheadSelfAttention(width, heads, 0.3, 0.3)
    _set_layout(attn, layout)
    x = rng.standard_normal((b, n, width)).astype(np.float32)
    mask = None
    if mask_rank:
        mask = causal_mask(n).asnumpy()
        if mask_rank == 3:
            mask = np.broadcast_to(mask, (b, n, n)).copy()
            mask[1, :, 0] = np.finfo(np.float32).min  # rows differ: key 0 hidden in sample 1
            mask[1, 0, 0] = 0.0
    out = attn(ms.Tensor(x), None if mask is None else ms.Tensor(mask)).asnumpy()

    w_in, b_in = attn.in_proj.weight.asnumpy().astype(np.float64), attn.in_proj.bias.asnumpy()
    w_out, b_out = attn.out_proj.weight.asnumpy().astype(np.float64), attn.out_proj.bias.asnumpy()
    q, k, v = np.split(x @ w_in.T + b_in, 3, axis=-1)
    split = lambda t: t.reshape(b, n, heads, width // heads).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(width // heads)
    if mask is not None:
        scores = scores + (mask if mask.ndim == 2 else mask[:, None])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ref = (probs @ split(v)).transpose(0, 2, 1, 3).reshape(b, n, width) @ w_out.T + b_out
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("kind", ["gelu", "quick_gelu", "gelu_tanh"])
@pytest.mark.parametrize("fused", [True, False])
def test_activations_and_their_bprop_equal_torch(kind, mode, fused, monkeypatch):
    """GELU, QuickGELU and GELU's tanh approximation carry a hand-written derivative (less
    memory in MindSpore's CPU graphs): value and gradient equal torch's float64 autograd of the same function within
    1e-6 (relative to the input's and the seed gradient's scale), in GRAPH (0) and PyNative
    (1) mode, over the range activations take (tails included), through the fused CPU kernels
    and through MindSpore's ops (MINDCLIP_CPU_KERNELS=0)."""
    import mindspore as ms
    import torch

    from mindclip.models.layers import make_activation

    monkeypatch.setenv("MINDCLIP_CPU_KERNELS", "1" if fused else "0")
    ms.set_context(mode=mode)
    try:
        x = np.concatenate([np.linspace(-12, 12, 40001),
                            np.random.default_rng(0).standard_normal(9999)])
        x = x.astype(np.float32).reshape(500, 100)  # above the kernels' threading threshold
        seed = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
        cell = make_activation(kind)
        assert cell.fused == fused
        out = cell(ms.Tensor(x)).asnumpy()
        weights = ms.Tensor(seed)

        def loss(t):
            return (cell(t) * weights).sum()

        grad_fn = ms.grad(loss)
        grad = (ms.jit(grad_fn) if mode == 0 else grad_fn)(ms.Tensor(x)).asnumpy()

        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        ty = {"gelu": lambda t: torch.nn.functional.gelu(t),
              "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
              "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}[kind](tx)
        (ty * torch.tensor(seed, dtype=torch.float64)).sum().backward()
        assert np.abs(out - ty.detach().numpy()).max() <= 1e-6 * max(1.0, np.abs(x).max())
        assert np.abs(grad - tx.grad.numpy()).max() <= 1e-6 * max(1.0, np.abs(seed).max())
    finally:
        ms.set_context(mode=0)


@pytest.fixture(autouse=True)
def two_kernel_threads():
    """The fused kernels' threaded paths: every test here runs them on two threads (conftest
    gives the rest of the suite one, where they take their one-thread paths)."""
    from mindclip.models import cpu_kernels

    previous = cpu_kernels.set_threads(2)
    yield
    cpu_kernels.set_threads(previous)


def test_kernel_threads_are_the_runs_in_the_library_mindspore_runs():
    """``set_num_threads`` / ``context.threads`` reach the kernels MindSpore runs: a count
    above the core count (never OpenMP's default) makes MindSpore's call of a kernel start
    that many threads; every count gives the same rows."""
    import mindspore as ms

    from mindclip.models import cpu_kernels
    from mindclip.models.layers import LayerNorm

    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)  # a parallel loop
    cell = LayerNorm(256, eps=1e-5)
    assert cell.fused
    before = cell(ms.Tensor(x)).asnumpy()
    for n in (1, 3, 2):
        cpu_kernels.set_threads(n)
        assert cpu_kernels.team_size() == n
        np.testing.assert_array_equal(cell(ms.Tensor(x)).asnumpy(), before)  # rows split, not sums
    threads = len(os.listdir("/proc/self/task"))
    cpu_kernels.set_threads((os.cpu_count() or 1) + 2)
    cell(ms.Tensor(x)).asnumpy()
    assert len(os.listdir("/proc/self/task")) > threads  # OpenMP started the larger team
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="integer >= 1"):
            mindclip.set_num_threads(bad)


def test_kernel_library_removed_while_running_is_built_again(tmp_path, monkeypatch):
    """A kernel library built into a temporary $MINDCLIP_HOME that is then deleted (as a test's
    tmp_path is) is built again where the store now is, and new cells use it."""
    import shutil

    import mindspore as ms

    from mindclip.models import cpu_kernels
    from mindclip.models.layers import LayerNorm

    monkeypatch.setenv("MINDCLIP_CPU_KERNELS", "1")
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "first"))
    cpu_kernels._library.cache_clear()
    first = cpu_kernels.library_path()
    assert first.startswith(str(tmp_path / "first")) and os.path.isfile(first)
    shutil.rmtree(tmp_path / "first")
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "second"))
    cell = LayerNorm(8, eps=1e-5)
    assert cell.fused and cpu_kernels.library_path().startswith(str(tmp_path / "second"))
    assert cpu_kernels.team_size() == 2  # the new library takes the run's thread count
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    assert np.abs(cell(ms.Tensor(x)).asnumpy() - expected).max() < 1e-5


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("fused", [True, False])
def test_layer_norm_and_its_gradients_equal_torch(mode, fused, monkeypatch):
    """LayerNorm (fused CPU kernel with a backward that recomputes the row statistics, or
    MindSpore's own): output and gradients w.r.t. input, gamma and beta equal torch's float64
    LayerNorm within 1e-5 (gamma/beta gradients, float32 sums over 3,000 rows: relative 1e-5), in
    GRAPH and PyNative mode, on rows with a large common offset (variance computed stably)."""
    import mindspore as ms
    import torch

    from mindclip.models.layers import LayerNorm

    monkeypatch.setenv("MINDCLIP_CPU_KERNELS", "1" if fused else "0")
    ms.set_context(mode=mode)
    try:
        rng = np.random.default_rng(4)
        x = (rng.standard_normal((30, 100, 96)) * 2 + rng.standard_normal((30, 100, 1)) * 50)
        x = x.astype(np.float32)
        seed = rng.standard_normal(x.shape).astype(np.float32)
        gamma = (1 + 0.3 * rng.standard_normal(96)).astype(np.float32)
        beta = (0.2 * rng.standard_normal(96)).astype(np.float32)
        cell = LayerNorm(96, eps=1e-6)
        assert cell.fused == fused
        cell.gamma.set_data(ms.Tensor(gamma))
        cell.beta.set_data(ms.Tensor(beta))
        weights = ms.Tensor(seed)
        out = cell(ms.Tensor(x)).asnumpy()

        def loss(t):
            return (cell(t) * weights).sum()

        grad_fn = ms.value_and_grad(loss, grad_position=0, weights=cell.trainable_params())
        _, (dx, (dgamma, dbeta)) = (ms.jit(grad_fn) if mode == 0 else grad_fn)(ms.Tensor(x))

        tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
        ty = torch.nn.functional.layer_norm(tx, (96,), tg, tb, eps=1e-6)
        (ty * torch.tensor(seed, dtype=torch.float64)).sum().backward()
        assert np.abs(out - ty.detach().numpy()).max() <= 1e-5
        assert np.abs(dx.asnumpy() - tx.grad.numpy()).max() <= 1e-5
        for ours, theirs in ((dgamma, tg.grad), (dbeta, tb.grad)):
            theirs = theirs.numpy()
            assert np.abs(ours.asnumpy() - theirs).max() <= 1e-5 * np.abs(theirs).max()
    finally:
        ms.set_context(mode=0)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("fused", [True, False])
def test_layer_scale_and_its_gradients_equal_torch(mode, fused, monkeypatch):
    """LayerScale (``x * gamma``: the fused CPU kernel, or MindSpore's ops): output and the
    gradients w.r.t. input and gamma equal torch's float64 autograd (gamma's: float32 sums over
    3,000 rows, relative 1e-5), in GRAPH and PyNative mode."""
    import mindspore as ms
    import torch

    from mindclip.models.layers import LayerScale

    monkeypatch.setenv("MINDCLIP_CPU_KERNELS", "1" if fused else "0")
    ms.set_context(mode=mode)
    try:
        rng = np.random.default_rng(6)
        x = rng.standard_normal((30, 100, 96)).astype(np.float32)
        seed = rng.standard_normal(x.shape).astype(np.float32)
        gamma = rng.standard_normal(96).astype(np.float32)
        cell = LayerScale(96, 1e-5)
        assert cell.scale.fused == fused
        cell.gamma.set_data(ms.Tensor(gamma))
        weights = ms.Tensor(seed)

        def loss(t):
            return (cell(t) * weights).sum()

        grad_fn = ms.value_and_grad(loss, grad_position=0, weights=cell.trainable_params())
        _, (dx, (dgamma,)) = (ms.jit(grad_fn) if mode == 0 else grad_fn)(ms.Tensor(x))
        out = cell(ms.Tensor(x)).asnumpy()

        tx, tg = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma))
        ty = tx * tg
        (ty * torch.tensor(seed, dtype=torch.float64)).sum().backward()
        assert np.abs(out - ty.detach().numpy()).max() <= 1e-6
        assert np.abs(dx.asnumpy() - tx.grad.numpy()).max() <= 1e-6
        want = tg.grad.numpy()
        assert np.abs(dgamma.asnumpy() - want).max() <= 1e-5 * np.abs(want).max()
    finally:
        ms.set_context(mode=0)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask_rank", [0, 3])
def test_attention_gradients_equal_torch(layout, mask_rank, mode):
    """The fused kernel's and the per-head layout's hand-written backward (and the batched
    layout's autodiff) give the gradients torch's autograd computes in float64 for the same
    attention, w.r.t. the input and both projections, within 1e-5."""
    import mindspore as ms
    import torch

    from mindclip.models.layers import MultiheadSelfAttention, causal_mask

    ms.set_context(mode=mode)
    try:
        rng = np.random.default_rng(1)
        b, n, width, heads = 3, 7, 16, 4
        attn = MultiheadSelfAttention(width, heads, 0.3, 0.3)
        _set_layout(attn, layout)
        x = rng.standard_normal((b, n, width)).astype(np.float32)
        seed = rng.standard_normal((b, n, width)).astype(np.float32)
        mask = None
        if mask_rank:
            mask = np.broadcast_to(causal_mask(n).asnumpy(), (b, n, n)).copy()
            mask[1, 3:, 0] = np.finfo(np.float32).min
        ms_mask, ms_seed = (None if mask is None else ms.Tensor(mask)), ms.Tensor(seed)

        def loss(t):
            return (attn(t, ms_mask) * ms_seed).sum()

        weights = [attn.in_proj.weight, attn.in_proj.bias, attn.out_proj.weight]
        grad_fn = ms.grad(loss, grad_position=0, weights=weights)
        dx, dw = (ms.jit(grad_fn) if mode == 0 else grad_fn)(ms.Tensor(x))

        t = {k: torch.tensor(w.asnumpy(), dtype=torch.float64, requires_grad=True) for k, w in
             zip(("w_in", "b_in", "w_out"), weights)}
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        q, k, v = (tx @ t["w_in"].T + t["b_in"]).chunk(3, dim=-1)
        split = lambda z: z.reshape(b, n, heads, width // heads).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / np.sqrt(width // heads)
        if mask is not None:
            scores = scores + torch.tensor(mask, dtype=torch.float64)[:, None]
        out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, width)
        out = out @ t["w_out"].T + torch.tensor(attn.out_proj.bias.asnumpy(), dtype=torch.float64)
        (out * torch.tensor(seed, dtype=torch.float64)).sum().backward()
        for ours, ref in zip([dx] + list(dw), [tx.grad, t["w_in"].grad, t["b_in"].grad, t["w_out"].grad]):
            ref = ref.numpy()
            assert np.abs(ours.asnumpy() - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    finally:
        ms.set_context(mode=0)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("mask_kind", ["padding", "head_bias"])
def test_attention_core_on_other_key_counts_equals_torch(mask_kind, mode):
    """The attention core with more keys than queries (CoCa's cross-attention, the poolers), a
    (B, 1, S) padding mask or a learned (H, L, S) head bias (relative positions): values and
    the gradients of q, k, v and the bias equal torch's float64 autograd within 1e-5, through
    the fused kernel and op by op."""
    import mindspore as ms
    import torch

    from mindclip.models.layers import PerHeadAttention

    rng = np.random.default_rng(2)
    b, n, keys, heads, hd = 2, 5, 9, 3, 8
    q, k, v = (rng.standard_normal((b, length, heads * hd)).astype(np.float32)
               for length in (n, keys, keys))
    seed = rng.standard_normal((b, n, heads * hd)).astype(np.float32)
    if mask_kind == "padding":
        mask = np.zeros((b, 1, keys), np.float32)
        mask[1, 0, 6:] = np.finfo(np.float32).min
    else:
        mask = rng.standard_normal((heads, n, keys)).astype(np.float32)
    tq, tk, tv, tm = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v, mask))
    split = lambda z: z.reshape(b, z.shape[1], heads, hd).transpose(1, 2)  # noqa: E731
    scores = split(tq) @ split(tk).transpose(-1, -2) / np.sqrt(hd)
    scores = scores + (tm[:, None] if mask_kind == "padding" else tm[None])
    ref = (scores.softmax(-1) @ split(tv)).transpose(1, 2).reshape(b, n, heads * hd)
    (ref * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    wanted = [tq.grad, tk.grad, tv.grad] + ([tm.grad] if mask_kind == "head_bias" else [])

    class Seeded(ms.nn.Cell):
        def __init__(self, cell):
            super().__init__()
            self.cell, self.seed = cell, ms.Tensor(seed)

        def construct(self, *inputs):
            return (self.cell(*inputs) * self.seed).sum()

    ms.set_context(mode=mode)
    try:
        for fused in (True, False):
            core = PerHeadAttention(heads, hd, head_bias=mask_kind == "head_bias")
            assert core.fused_forward is not None
            core.fused = fused
            inputs = [ms.Tensor(a) for a in (q, k, v, mask)]
            out = core(*inputs).asnumpy()
            assert np.abs(out - ref.detach().numpy()).max() <= 1e-5, fused
            positions = (0, 1, 2, 3) if mask_kind == "head_bias" else (0, 1, 2)
            grads = ms.grad(Seeded(core), grad_position=positions)(*inputs)
            for ours, want in zip(grads, wanted):
                want = want.numpy()
                assert np.abs(ours.asnumpy() - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), fused
    finally:
        ms.set_context(mode=0)
