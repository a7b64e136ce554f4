"""Stochastic layers draw from states a checkpoint holds: the in-graph integer hash equals its
statement in numpy in both modes, its numbers look uniform, a restored state repeats its draws,
weight files leave the states out, and a run with stochastic depth and dropout killed with
SIGKILL resumes exactly."""
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from conftest import ROOT
from mindclip.models.patch import PatchDropout
from mindclip.models.rng import DropPath, Dropout, Stochastic, seed_rng_states, weight_parameters
from test_training_runs import DEMO, kill_and_resume

MODES = pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
M32 = np.uint64(0xFFFFFFFF)


def _mix(x):
    # the hash as stated: x ^= x >> 16; x *= 0x21f0aaad; x ^= x >> 15; x *= 0x735a2d97; x ^= x >> 15
    x = np.asarray(x, dtype=np.uint64)
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x21F0AAAD)) & M32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x735A2D97)) & M32
    return x ^ (x >> np.uint64(15))


def _uniform(key: int, counter: int, count: int) -> np.ndarray:
    """Draw ``counter`` of a state keyed ``key``: 24 high bits of a double hash of each
    element's index, mixed with the key and the hashed counter."""
    base = _mix(np.uint64(key) ^ _mix(np.uint64(counter)))
    bits = _mix(_mix(np.arange(count, dtype=np.uint64) ^ base) ^ np.uint64(key))
    return (bits >> np.uint64(8)).astype(np.float64) / 2.0 ** 24


class _Draws(Stochastic):
    def construct(self, x):
        return self.uniform(x.shape)


@pytest.fixture
def mode_of(request):
    previous = ms.get_context("mode")
    yield lambda mode: ms.set_context(mode=mode)
    ms.set_context(mode=previous)


@MODES
def test_draws_are_the_hash_and_advance_the_state(mode, mode_of):
    mode_of(mode)
    layer = _Draws()
    key = 0xDEADBEEF
    layer.rng_state.set_data(Tensor(np.array([key, 5], np.int64)))
    x = Tensor(np.zeros((4, 1000), np.float32))
    for counter in (5, 6, 7):
        got = layer(x).asnumpy()
        assert got.dtype == np.float32 and got.shape == (4, 1000)
        np.testing.assert_array_equal(got.ravel(), _uniform(key, counter, 4000).astype(np.float32))
    assert layer.rng_state.asnumpy().tolist() == [key, 8]


def test_draws_look_uniform_and_independent():
    n = 1 << 18
    a, b, other = _uniform(7, 0, n), _uniform(7, 1, n), _uniform(8, 0, n)
    for u in (a, b, other):
        assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
        counts = np.bincount((u * 64).astype(int), minlength=64)
        expected = n / 64
        assert ((counts - expected) ** 2 / expected).sum() < 120  # chi-square, 63 dof: p ~ 1e-5
    for x, y in ((a, b), (a, other), (a[:-1], a[1:])):  # counters, keys, neighbours
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.01


@MODES
def test_drop_path_and_dropout_masks_and_gradients(mode, mode_of):
    """Values and input gradients of a training step are those of the mask the numpy hash
    gives; the state advances once per step, also under value_and_grad."""
    mode_of(mode)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 5)).astype(np.float32)
    for layer, shape in ((DropPath(0.25), (64, 1, 1)), (Dropout(0.25), (64, 3, 5))):
        layer.set_train(True)
        layer.rng_state.set_data(Tensor(np.array([11, 3], np.int64)))

        def loss(inputs):
            return (layer(inputs) * Tensor(x)).sum()

        value, grad = ms.value_and_grad(loss)(Tensor(x))
        mask = np.floor(_uniform(11, 3, int(np.prod(shape))).reshape(shape) + 0.75) / 0.75
        np.testing.assert_allclose(grad.asnumpy(), np.broadcast_to(mask, x.shape) * x, rtol=1e-6)
        np.testing.assert_allclose(float(value.asnumpy()), float((mask * x * x).sum()), rtol=1e-5)
        assert layer.rng_state.asnumpy().tolist() == [11, 4]
        assert 0.6 < (mask > 0).mean() < 0.9
        layer.set_train(False)
        np.testing.assert_array_equal(layer(Tensor(x)).asnumpy(), x)
        assert layer.rng_state.asnumpy().tolist() == [11, 4]  # inference draws nothing


def test_patch_dropout_keeps_the_largest_draws():
    drop = PatchDropout(0.5, prefix_tokens=1).set_train(True)
    drop.rng_state.set_data(Tensor(np.array([3, 0], np.int64)))
    x = np.arange(2 * 9 * 1, dtype=np.float32).reshape(2, 9, 1)
    kept = drop(Tensor(x)).asnumpy()[..., 0]
    noise = _uniform(3, 0, 16).reshape(2, 8)
    expected = np.argsort(-noise, axis=1, kind="stable")[:, :4] + 1  # after the class token
    np.testing.assert_array_equal(kept[:, 1:], np.take_along_axis(x[..., 0], expected, 1))
    np.testing.assert_array_equal(kept[:, 0], x[:, 0, 0])
    assert PatchDropout(0.0).parameters_dict() == {}  # inactive: no state


def _tiny_convnext_clip(**vision):
    from mindclip.models.config import CLIPConfig
    from mindclip.families.base import get_family
    import tiny_towers  # noqa: F401  (registers mctest_convnext)

    cfg = CLIPConfig.from_dict({
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "mctest_convnext", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 32, **vision},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}})
    return get_family("clip").build_model(cfg)


def test_states_are_seeded_by_path_and_left_out_of_weight_files(tmp_path):
    model = _tiny_convnext_clip(timm_drop=0.3, timm_drop_path=0.5)
    model.set_patch_dropout(0.0)
    names = [k for k in model.parameters_dict() if k.endswith("rng_state")]
    assert len(names) == 5 + 1  # drop paths of 5 of the 6 blocks (the first one's rate is 0), head dropout
    assert seed_rng_states(model, seed=1) == 6
    again = _tiny_convnext_clip(timm_drop=0.3, timm_drop_path=0.5)
    seed_rng_states(again, seed=1)
    states = {k: p.asnumpy() for k, p in model.parameters_dict().items() if k in names}
    assert all(np.array_equal(v, again.parameters_dict()[k].asnumpy()) for k, v in states.items())
    assert len({int(v[0]) for v in states.values()}) == len(states)  # a stream each
    seed_rng_states(again, seed=1, rank=1)
    assert all(not np.array_equal(v, again.parameters_dict()[k].asnumpy()) for k, v in states.items())

    from mindclip.factory import find_weight_file, load_pretrained
    from mindclip.models.weights_io import read_weights

    folder = model.save_pretrained(str(tmp_path / "saved"))
    tensors, _ = read_weights(find_weight_file(folder))
    assert set(tensors) == set(weight_parameters(model)) and not any("rng_state" in k for k in tensors)
    load_pretrained(again, folder)  # the states are no weights a file must hold


def test_conv_tower_with_stochastic_depth_and_dropout_resumes_exactly(tmp_path, monkeypatch):
    """A shrunk convnext_base (drop path 0.5, head dropout 0.3) through run_mindformer.py in
    GRAPH mode, with activation recomputation, killed with SIGKILL after a checkpoint and
    resumed: every step's loss equals the uninterrupted run's, and every stochastic layer drew
    once a step (not again when its block is recomputed)."""
    from mindclip.models.weights_io import read_weights

    monkeypatch.setenv("PYTHONPATH", os.path.join(ROOT, "tests"))
    config = tmp_path / "convnext.yaml"
    config.write_text(
        f"base_config: {DEMO}\n"
        "custom_imports: [tiny_towers]\n"
        "model:\n  name: null\n  family: clip\n  config:\n    embed_dim: 32\n"
        "    vision_cfg: {timm_model_name: mctest_convnext, timm_model_pretrained: false, timm_pool: '',\n"
        "                 timm_proj: linear, timm_drop: 0.3, timm_drop_path: 0.5, image_size: 32}\n"
        "    text_cfg: {context_length: 77, vocab_size: 49408, width: 64, heads: 2, layers: 2}\n")
    args = ["--config", str(config), "--train_dataset.num_samples", "80", "--runner.batch_size", "8",
            "--runner.epochs", "3", "--runner.save_interval", "4", "--runner.log_interval", "1",
            "--runner.progress_bar", "false", "--eval_dataset.type", "null",
            "--eval.retrieval_dataset.type", "null", "--runner.grad_checkpointing", "true"]
    reference, records = kill_and_resume(tmp_path, args)
    losses = {r["step"]: r["loss"] for r in reference}
    for r in records:
        assert abs(r["loss"] - losses[r["step"]]) <= 1e-6, (r["step"], r["loss"], losses[r["step"]])

    for run in ("full", "killed"):
        last = os.path.join(tmp_path, run, "checkpoints", "step_00000030.ckpt")
        tensors, _ = read_weights(last)
        states = {k: v for k, v in tensors.items() if k.endswith("rng_state")}
        assert len(states) == 6 and all(int(v[1]) == 30 for v in states.values()), states
    final, _ = read_weights(os.path.join(tmp_path, "killed", "mindclip_model.safetensors"))
    assert not any(k.endswith("rng_state") for k in final)


def test_a_checkpoint_without_draw_states_restores_the_weights_and_says_so(tmp_path):
    """A training checkpoint written before draw states were saved: the weights come back,
    the states keep their seeded values, and the note says the run is no longer exact; a
    missing weight is still an error."""
    from mindclip.models.rng import is_rng_state
    from mindclip.training.checkpoint import read_resumable, restore, save_training_checkpoint

    model = _tiny_convnext_clip(timm_drop_path=0.5)
    seed_rng_states(model, seed=3)
    params = list(model.get_parameters())
    weights = [p for p in params if not is_rng_state(p.name)]
    save_training_checkpoint(str(tmp_path), weights, {"global_step": 4, "epoch": 0, "batch_in_epoch": 4})
    fresh = _tiny_convnext_clip(timm_drop_path=0.5)
    seed_rng_states(fresh, seed=3)
    seeded = {k: p.asnumpy().copy() for k, p in fresh.parameters_dict().items() if is_rng_state(k)}
    path, metadata, skipped = read_resumable(str(tmp_path))
    state, notes = restore(path, metadata, list(fresh.get_parameters()))
    assert state["global_step"] == 4 and not skipped
    assert len(notes) == 1 and "holds no draw state for 5 stochastic layer(s)" in notes[0]
    for k, p in fresh.parameters_dict().items():
        expected = seeded[k] if is_rng_state(k) else model.parameters_dict()[k].asnumpy()
        np.testing.assert_array_equal(p.asnumpy(), expected, err_msg=k)

    save_training_checkpoint(str(tmp_path), weights[1:], {"global_step": 8})
    path, metadata, _ = read_resumable(str(tmp_path))
    with pytest.raises(ValueError, match=f"missing \\['{weights[0].name}'\\]"):
        restore(path, metadata, list(fresh.get_parameters()))
