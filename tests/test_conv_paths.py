"""ModifiedResNet's convolutions on CPU: the im2col + matmul path (what a processor with a slow
Conv2d kernel gets) equals MindSpore's Conv2d in values and gradients, in both modes; the
choice between them is measured once per shape and processor and cached; exports trace
MindSpore's kernel. Forced with MINDCLIP_CPU_CONV, since this machine may be either kind."""
import json

import numpy as np
import pytest

import mindspore as ms
from mindspore import ops
import mindclip
from mindclip.models import conv as conv_module
from mindclip.models.conv import Conv2d


def _pair(monkeypatch):
    """The same RN-Tiny weights, one model on each path."""
    models = {}
    for path in ("native", "matmul"):
        monkeypatch.setenv("MINDCLIP_CPU_CONV", path)
        ms.set_seed(4)
        models[path] = mindclip.create_model("RN-Tiny")
    for name, p in models["matmul"].parameters_dict().items():
        p.set_data(models["native"].parameters_dict()[name].value())
    return models


def _summed_features(model):
    def loss(images):  # GRAPH mode parses a def, not a lambda
        return model.image_features(images).sum()
    return loss


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_matmul_convolutions_equal_conv2d_values_and_gradients(monkeypatch, mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        models = _pair(monkeypatch)
        convs = [c for _, c in models["matmul"].cells_and_names() if isinstance(c, Conv2d)]
        assert {c.path for c in convs if c.k == 3} == {"matmul"}
        assert {c.path for c in convs if c.k == 1} == {"native"}  # 1x1: fast everywhere
        size = models["native"].image_size
        images = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32))
        out = {k: m.encode_image(images).asnumpy() for k, m in models.items()}
        np.testing.assert_allclose(out["matmul"], out["native"], atol=1e-5)

        grads = {}
        for key, model in models.items():
            model.set_train(True)
            params = model.visual.trainable_params()
            grad_fn = ms.value_and_grad(_summed_features(model), None, params)
            grads[key] = {p.name: g.asnumpy() for p, g in zip(params, grad_fn(images)[1])}
        # relative to each gradient's size; ones that vanish analytically (the key bias of the
        # attention pool) are compared against the largest gradient instead
        largest = max(float(np.abs(g).max()) for g in grads["native"].values())
        for name, g in grads["native"].items():
            scale = max(float(np.abs(g).max()), 1e-3 * largest)
            assert np.abs(grads["matmul"][name] - g).max() <= 1e-4 * scale, name
    finally:
        ms.set_context(mode=previous)


def test_choice_is_measured_once_per_shape_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path))
    monkeypatch.setenv("MINDCLIP_CPU_CONV", "auto")
    measured = []
    real = conv_module.measure

    def counting(shape, batch=2):
        measured.append(shape)
        return real(shape, batch)

    monkeypatch.setattr(conv_module, "measure", counting)
    model = mindclip.create_model("RN-Tiny")
    shapes = {c.shape_key for _, c in model.cells_and_names() if isinstance(c, Conv2d) and c.k > 1}
    assert set(measured) == shapes and len(measured) == len(shapes)
    cache = list((tmp_path / "kernels").glob("conv_paths-*.json"))
    assert len(cache) == 1
    saved = json.loads(cache[0].read_text())
    assert set(saved.values()) <= {"native", "matmul"} and len(saved) == len(shapes)
    measured.clear()
    mindclip.create_model("RN-Tiny")  # a second build reads the cache
    assert measured == []


def _slowed(path_fn):
    """``path_fn`` plus ~10 GFLOP of products that depend on its input: a path made slow on
    purpose, by far more than the two paths can differ on any processor at this shape."""
    def slow(self, x):
        y = path_fn(self, x)
        big = ops.tile(x.reshape(-1)[:1], (1024 * 1024,)).reshape(1024, 1024)
        for _ in range(5):
            big = ops.matmul(big, big) * 1e-3
        return y + big.sum() * 0.0
    return slow


@pytest.mark.parametrize("slow_path", ["native", "matmul"])
def test_measurement_picks_the_faster_path(monkeypatch, slow_path):
    """Whichever path is slow on a processor, the measurement times both and takes the other
    (the slow-conv processor forced by slowing one path 21x)."""
    from mindspore import nn

    if slow_path == "native":
        monkeypatch.setattr(nn.Conv2d, "construct", _slowed(nn.Conv2d.construct))
    else:
        monkeypatch.setattr(Conv2d, "im2col_matmul", _slowed(Conv2d.im2col_matmul))
    expected = {"native": "matmul", "matmul": "native"}[slow_path]
    assert conv_module.measure((16, 16, 3, 1, 24)) == expected


def test_export_traces_mindspores_kernel(monkeypatch):
    from mindclip.models.cpu_kernels import portable

    monkeypatch.setenv("MINDCLIP_CPU_CONV", "matmul")
    model = mindclip.create_model("RN-Tiny")
    convs = [c for _, c in model.cells_and_names() if isinstance(c, Conv2d) and c.k == 3]
    with portable(model):
        assert {c.path for c in convs} == {"native"}
    assert {c.path for c in convs} == {"matmul"}
    with pytest.raises(ValueError, match="MINDCLIP_CPU_CONV='fast'"):
        monkeypatch.setenv("MINDCLIP_CPU_CONV", "fast")
        mindclip.create_model("RN-Tiny")
