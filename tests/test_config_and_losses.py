"""Run-config system, registry errors, and losses against open_clip's."""
import numpy as np
import pytest
import torch

import mindspore as ms
from mindclip import registry
from mindclip.config import ConfigError, load_config
from mindclip.losses import ClipLoss, SigLipLoss


def test_base_config_list_deep_merge_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("runner:\n  epochs: 3\n  batch_size: 8\noptimizer:\n  lr: 0.1\n")
    (tmp_path / "b.yaml").write_text("runner:\n  batch_size: 16\nseed: 7\n")
    (tmp_path / "run.yaml").write_text("base_config: [a.yaml, b.yaml]\noptimizer:\n  weight_decay: 0.0\n")
    cfg = load_config(str(tmp_path / "run.yaml"), {"optimizer.lr": 1e-4, "runner.accumulate_steps": 2})
    assert cfg["runner"]["epochs"] == 3 and cfg["runner"]["batch_size"] == 16 and cfg["seed"] == 7
    assert cfg["optimizer"] == {**cfg["optimizer"], "lr": 1e-4, "weight_decay": 0.0}
    assert cfg["runner"]["accumulate_steps"] == 2
    assert cfg["runner"]["log_interval"] == 10  # untouched defaults survive the merge


def test_unknown_keys_name_the_valid_ones(tmp_path):
    (tmp_path / "bad.yaml").write_text("runner:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'runner.epoch'.*'epochs'"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer.learning_rate'.*'lr'"):
        load_config(None, {"optimizer.learning_rate": 1.0})
    with pytest.raises(ConfigError, match="valid keys at top level"):
        load_config(None, {"trainer": 1})


def test_registry_lists_valid_names():
    with pytest.raises(KeyError, match=r"unknown loss 'infonce'; valid: \['clip', 'siglip'\]"):
        registry.get("loss", "infonce")
    assert {"flickr8k", "json", "csv", "coco", "webdataset", "yfcc", "cifar100", "imagefolder",
            "digits"} <= set(registry.names("dataset"))
    assert {"zero_shot_image_classification", "feature_extraction",
            "image_text_retrieval"} <= set(registry.names("pipeline"))


def _features(n=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    img, txt = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img.astype(np.float32), txt.astype(np.float32)


def test_clip_loss_and_gradients_equal_open_clip():
    from open_clip.loss import ClipLoss as TorchClipLoss

    img, txt = _features()
    ti, tt = torch.tensor(img, requires_grad=True), torch.tensor(txt, requires_grad=True)
    ref = TorchClipLoss()(ti, tt, torch.tensor(14.0))
    ref.backward()
    loss_fn = ClipLoss(rank=0, world_size=1)

    def forward(a, b):
        return loss_fn(a, b, ms.Tensor(14.0))

    grad_fn = ms.value_and_grad(forward, grad_position=(0, 1))
    loss, (gi, gt) = grad_fn(ms.Tensor(img), ms.Tensor(txt))
    assert abs(float(loss.asnumpy()) - float(ref)) <= 1e-6
    np.testing.assert_allclose(gi.asnumpy(), ti.grad.numpy(), rtol=1e-5, atol=5e-6)  # logits x14 amplify fp32 rounding
    np.testing.assert_allclose(gt.asnumpy(), tt.grad.numpy(), rtol=1e-5, atol=5e-6)  # logits x14 amplify fp32 rounding


def test_siglip_loss_and_gradients_equal_open_clip():
    """The loss and its gradients in the features, the scale and the bias (both learned)."""
    from open_clip.loss import SigLipLoss as TorchSigLip

    img, txt = _features(seed=1)
    ti, tt = torch.tensor(img, requires_grad=True), torch.tensor(txt, requires_grad=True)
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-7.0, requires_grad=True)
    ref = TorchSigLip()(ti, tt, scale, bias)
    ref.backward()
    ours = SigLipLoss(rank=0, world_size=1)
    grad_fn = ms.value_and_grad(ours, grad_position=(0, 1, 2, 3))
    loss, grads = grad_fn(ms.Tensor(img), ms.Tensor(txt), ms.Tensor(10.0), ms.Tensor(-7.0))
    assert abs(float(loss.asnumpy()) - float(ref)) <= 1e-5
    for got, want in zip(grads, (ti.grad, tt.grad, scale.grad, bias.grad)):
        np.testing.assert_allclose(got.asnumpy(), want.numpy(), rtol=1e-5, atol=1e-6)


