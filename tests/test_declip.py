"""DeCLIP against its original PyTorch code (reference data in tests/fixtures/declip_reference,
produced by github.com/Sense-GVT/DeCLIP at 9d9e25d; see its README): weights regenerated from
the recipe and checked against the stored checksums, written in DeCLIP's checkpoint layout,
converted with the CLI; then features, SimSiam heads, MLM logits, the four loss terms, the
total, gradients, nearest-neighbour indices and the memory after the step. Each loss term is
also recomputed by an independent numpy formulation below."""
import json
import math
import os
import zlib

import numpy as np
import pytest
import torch

import mindspore as ms
from conftest import FEATURE_ATOL, ROOT, whole_and_accumulated_steps

from mindclip import create_model
from mindclip.convert.cli import main as convert_cli
from mindclip.families.declip_objective import DeCLIPObjective

REF_DIR = os.path.join(ROOT, "tests", "fixtures", "declip_reference")
LOSS_RTOL = 1e-4


def recipe(k, shape):
    """The README's weight recipe (section 3); None for the kept entries."""
    if k == "logit_scale" or k.endswith(".num_batches_tracked"):
        return None
    rng = np.random.default_rng(zlib.crc32(k.encode("utf-8")))
    norm = (".ln_" in k) or (".bn" in k) or (".downsample.1." in k)
    if k.endswith(".running_mean"):
        a = 0.1 * rng.standard_normal(shape)
    elif k.endswith(".running_var"):
        a = rng.uniform(0.5, 1.5, shape)
    elif norm and k.endswith(".weight"):
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    elif norm and k.endswith(".bias"):
        a = 0.1 * rng.standard_normal(shape)
    else:
        std = 0.02 if len(shape) < 2 else 1.0 / math.sqrt(math.prod(shape[1:]))
        a = std * rng.standard_normal(shape)
    return a.astype(np.float32)


def reference_state():
    """The tiny model's state dict (DeCLIP names, ``module.`` prefix), checked against the
    stored checksums before anything is compared."""
    keys = json.load(open(os.path.join(REF_DIR, "keys.json")))["models"]["declip_tiny"]["keys"]
    ref = np.load(os.path.join(REF_DIR, "reference.npz"))
    state, sums, sumsqs = {}, [], []
    for full, shape, _ in keys:
        k = full[len("module."):]
        value = recipe(k, tuple(shape))
        if value is None:
            value = (np.full(shape, np.log(1 / 0.07), np.float32) if k == "logit_scale"
                     else np.zeros(shape, np.int64))
        state[full] = value
    for k in ref["recipe_keys"]:
        t = state["module." + str(k)].astype(np.float64)
        sums.append(t.sum())
        sumsqs.append((t ** 2).sum())
    assert np.allclose(sums, ref["recipe_sum"], rtol=1e-9, atol=1e-9)
    assert np.allclose(sumsqs, ref["recipe_sumsq"], rtol=1e-9, atol=1e-9)
    return state


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(REF_DIR, "reference.npz"))


@pytest.fixture(scope="module")
def terms():
    return json.load(open(os.path.join(REF_DIR, "loss_terms.json")))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """DeCLIP's checkpoint container written with torch, converted by the CLI."""
    folder = tmp_path_factory.mktemp("declip")
    src = str(folder / "ckpt.pth.tar")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in reference_state().items()}
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "last_iter": 0}, src)
    out = str(folder / "declip_tiny.safetensors")
    assert convert_cli(["--torch_path", src, "--mindspore_path", out,
                        "--model", "DeCLIP-ViT-Tiny-32"]) == 0
    return out


@pytest.fixture
def model(converted):
    return create_model(pretrained=converted)


def _views(ref):
    images = ref["images"]
    return ms.Tensor(images[:, 0:3]), ms.Tensor(images[:, 3:6])


def _ids(a):
    return ms.Tensor(np.asarray(a).astype(np.int32))


def _close(ours, theirs, atol=FEATURE_ATOL):
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)).max()
    assert diff <= atol, diff


def test_features_equal_declip(model, ref):
    model.set_train(False)
    v1, v2 = _views(ref)
    _close(model.encode_image(v1).asnumpy(), ref["image_features"][0])
    _close(model.encode_image(v2).asnumpy(), ref["image_features"][1])
    for name, tokens in (("text_features", "tokens"), ("text_features_unmasked", "tokens_unmasked"),
                         ("text_features_aug", "tokens_aug")):
        _close(model.encode_text(_ids(ref[tokens])).asnumpy(), ref[name])


def test_simsiam_heads_equal_declip_in_eval_and_train_mode(model, ref):
    for mode, atol in (("eval", FEATURE_ATOL), ("train", FEATURE_ATOL)):
        model.set_train(mode == "train")
        for v in range(2):
            z, p = model.simsiam(ms.Tensor(ref["image_features"][v]))
            _close(z.asnumpy(), ref[f"simsiam_z_{mode}"][v], atol)
            _close(p.asnumpy(), ref[f"simsiam_p_{mode}"][v], atol)


def test_mlm_logits_at_selected_positions(model, ref):
    model.set_train(False)
    _, words = model.encode_text_tokens(_ids(ref["tokens"]))
    rows, cols = ref["mlm_positions"][:, 0], ref["mlm_positions"][:, 1]
    picked = words.asnumpy()[rows, cols]
    _close(picked, ref["mlm_word_features"])
    _close(model.mlm_logits(ms.Tensor(picked)).asnumpy(), ref["mlm_logits"])


def _mlm_columns(labels, k):
    """The loader's per-row (positions, targets) layout of an MLM label matrix."""
    positions = np.zeros((len(labels), k), np.int32)
    targets = np.full((len(labels), k), -100, np.int32)
    for r, row in enumerate(labels):
        sel = np.flatnonzero(row != -100)
        positions[r, :len(sel)] = sel
        targets[r, :len(sel)] = row[sel]
    return positions, targets


def _objective(model, ref):
    objective = DeCLIPObjective(model, {"clip": 0.4, "simsiam": 0.2, "mlm": 0.2, "nn": 0.2},
                                memory_size=16)
    objective.memory.bank.set_data(ms.Tensor(ref["nn_bank"]))
    return objective


def _batch(ref, k=5):
    positions, targets = _mlm_columns(ref["mlm_labels"], k)
    return (*_views(ref), _ids(ref["tokens"]), _ids(positions), _ids(targets), _ids(ref["tokens_aug"]))


def test_loss_terms_total_gradients_and_memory_equal_declip(model, ref, terms):
    model.set_train(True)
    objective = _objective(model, ref)
    index_t = objective.memory.lookup(model.encode_text(_ids(ref["tokens"])))[1].asnumpy()
    index_a = objective.memory.lookup(model.encode_text(_ids(ref["tokens_aug"])))[1].asnumpy()
    assert index_t.tolist() == terms["nn_index_text"]
    assert index_a.tolist() == terms["nn_index_text_aug"]

    params = [p for p in model.trainable_params()]
    grad_fn = ms.value_and_grad(objective, None, params, has_aux=True)
    (total, parts), grads = grad_fn(*_batch(ref))
    ours = dict(zip(("clip_loss", "simsiam_loss", "text_mlm_loss", "clip_nn_text_loss"),
                    (float(t.asnumpy()) for t in parts)))
    for name, value in ours.items():
        assert value == pytest.approx(terms[name], rel=LOSS_RTOL), name
    assert float(total.asnumpy()) == pytest.approx(terms["total"], rel=LOSS_RTOL)

    by_name = {p.name: g.asnumpy() for p, g in zip(params, grads)}
    assert "visual.conv1.weight" not in by_name  # frozen, as DeCLIP's train() freezes it
    grad_map = {"visual.proj": "visual.proj",
                "visual.positional_embedding": "visual.positional_embedding",
                "encode_text.text_projection.weight": "text.text_projection.weight",
                "encode_text.text_projection.bias": "text.text_projection.bias",
                "encode_text.positional_embedding": "text.positional_embedding",
                "predictor.layer2.bias": "predictor.layer2.bias"}
    for theirs, mine in grad_map.items():
        expected = ref[f"grad.{theirs}"]
        scale = max(np.abs(expected).max(), 1e-6)
        assert np.abs(by_name[mine] - expected).max() / scale <= 1e-3, theirs
    assert float(by_name["logit_scale"]) == pytest.approx(terms["grad_logit_scale"], rel=1e-3)

    _close(objective.memory.bank.asnumpy(), ref["nn_bank_after"], 1e-6)
    assert int(objective.memory.ptr.asnumpy()) == terms["nn_bank_ptr_after"]


# ---- independent numpy formulation of each term, from our model's own outputs ----

def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _ce(m):
    return -np.mean(np.diag(_log_softmax(m)))


def _unit(x, eps):
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)


def test_each_term_equals_a_numpy_formulation(model, ref):
    model.set_train(True)
    v1, v2 = _views(ref)
    f = [model.encode_image(v).asnumpy().astype(np.float64) for v in (v1, v2)]
    zp = [[a.asnumpy().astype(np.float64) for a in model.simsiam(ms.Tensor(x.astype(np.float32)))]
          for x in f]
    text, words = model.encode_text_tokens(_ids(ref["tokens"]))
    text = text.asnumpy().astype(np.float64)
    text_aug = model.encode_text(_ids(ref["tokens_aug"])).asnumpy().astype(np.float64)
    rows, cols = np.nonzero(ref["mlm_labels"] != -100)
    logits = model.mlm_logits(ms.Tensor(words.asnumpy()[rows, cols])).asnumpy().astype(np.float64)
    s = min(math.exp(float(model.logit_scale.asnumpy())), 100.0)

    imgs = [_unit(x, 0.0) for x in f]
    t, ta = _unit(text, 1e-10), _unit(text_aug, 1e-10)
    clip = np.mean([(_ce(s * i @ x.T) + _ce(s * x @ i.T)) / 2 for i in imgs for x in (t, ta)])
    bank = ref["nn_bank"].astype(np.float64)
    nb = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    nn_t = _unit(bank[np.argmax(_unit(t, 1e-12) @ nb.T, axis=1)], 1e-10)
    nn_a = _unit(bank[np.argmax(_unit(ta, 1e-12) @ nb.T, axis=1)], 1e-10)
    nn_loss = np.mean([_ce(s * i @ n.T) for i in imgs for n in (nn_t, nn_a)])
    cos = lambda p, z: np.mean(np.sum(_unit(p, 1e-12) * _unit(z, 1e-12), axis=1))  # noqa: E731
    (z1, p1), (z2, p2) = zp
    simsiam = -(cos(p1, z2) + cos(p2, z1)) / 2
    targets = ref["mlm_labels"][rows, cols]
    mlm = -np.mean(_log_softmax(logits)[np.arange(len(targets)), targets])

    objective = _objective(model, ref)
    total, parts = objective(*_batch(ref))
    for ours, theirs in zip(parts, (clip, simsiam, mlm, nn_loss)):
        assert float(ours.asnumpy()) == pytest.approx(theirs, rel=LOSS_RTOL)
    assert float(total.asnumpy()) == pytest.approx(
        0.4 * clip + 0.2 * simsiam + 0.2 * mlm + 0.2 * nn_loss, rel=LOSS_RTOL)


def test_logit_scale_clamped_after_the_gradients_before_the_update(model, ref, terms):
    """DeCLIP's rule in the train step: the forward sees the raw value (the reference total
    at ln(1/0.07)), the optimizer updates the clamped one, and the result is clamped again.
    Bounds [1, 2.5] around the raw 2.659 tell the orders apart: the gradient is positive, so
    Adam's first step subtracts lr: 2.5 - lr here, clamp(2.659 - lr) = 2.5 had the clamp come
    only after the step."""
    from mindclip.training import AdamW, TrainStep

    model.set_train(True)
    objective = DeCLIPObjective(model, {"clip": 0.4, "simsiam": 0.2, "mlm": 0.2, "nn": 0.2},
                                memory_size=16, logit_scale_bounds=(1.0, 2.5))
    objective.memory.bank.set_data(ms.Tensor(ref["nn_bank"]))
    lr = 0.01
    step = TrainStep(objective, AdamW(model.trainable_params(), np.full(4, lr, np.float32)))
    loss, _, _, scale = step(*_batch(ref))
    assert float(loss.asnumpy()) == pytest.approx(terms["total"], rel=LOSS_RTOL)
    assert terms["grad_logit_scale"] > 0
    assert float(scale.asnumpy()) == pytest.approx(2.5 - lr, abs=1e-5)
    assert float(model.logit_scale.asnumpy()) == pytest.approx(2.5 - lr, abs=1e-5)


def test_accumulated_step_equals_one_large_batch(model, ref):
    """``runner.accumulate_steps`` for DeCLIP: the features of both micro-batches cached, each
    re-run with gradients against all of them; the SimSiam heads run on the whole batch (their
    BatchNorm over all of it), the MLM term is the mean over every selected token, the memory
    and the heads' BatchNorm statistics move once per step. Two steps give the losses, weights,
    memory and statistics of two steps on the whole batch (AdamW with eps 1, so that a gradient
    difference shows in the weights)."""
    init, runs = whole_and_accumulated_steps(
        model, lambda m: _objective(m, ref), _batch(ref),
        lambda objective: {p.name: p.asnumpy().copy() for p in objective.memory.get_parameters()})
    (whole, expected), (accumulated, got) = runs
    assert max(np.abs(expected[k] - init[k]).max() for k in init if "moving" not in k) > 1e-3
    assert any(np.abs(expected[k] - init[k]).max() > 1e-3 for k in init if "moving_mean" in k)
    assert np.abs(expected["nn_memory.bank"] - ref["nn_bank"]).max() > 0.1  # 2 x 8 captions enqueued
    np.testing.assert_allclose(accumulated, whole, rtol=1e-5)
    for name, value in expected.items():
        # weights within 1e-6; BatchNorm statistics, a batch variance from features computed at
        # another batch shape (float32 rounding), within 1e-5 relative
        tolerance = (1e-5 if "moving" in name else 1e-6) * max(1.0, float(np.abs(value).max()))
        assert np.abs(got[name] - value).max() <= tolerance, (name, float(np.abs(got[name] - value).max()))
