"""Activation recomputation (``set_grad_checkpointing``, ``runner.grad_checkpointing``): for
every kind of residual block we have, the gradients of a training step equal those of the
same step without recomputation (fp32, <= 1e-6 relative), in PyNative and GRAPH mode, and the
states a block writes (stochastic depth's draw counters, BatchNorm's running statistics)
advance once per step, as without it."""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from mindclip import create_model
from mindclip.models.checkpointing import set_grad_checkpointing
from mindclip.models.rng import is_rng_state, seed_rng_states
from test_coca import shrink_coca
from test_openclip_zoo import OPENCLIP_CONFIGS, random_tokens, shrink
from test_timm_towers import shrink_timm

STATE_LEAVES = ("rng_state", "moving_mean", "moving_variance", "running_mean", "running_var")

# name -> (how to shrink it, overrides): one config per kind of residual block
KINDS = {
    "ViT-B-32": (shrink, {}),                                   # native ViT and text transformer
    "RN50": (shrink, {}),                                       # ModifiedResNet (BatchNorm)
    "convnext_base_w": (shrink_timm, {"timm_drop_path": 0.5}),  # ConvNeXt, stochastic depth
    "EVA02-B-16": (shrink_timm, {"timm_drop_path": 0.5}),       # EVA (rotary embedding as input)
    "swin_base_patch4_window7_224": (shrink_timm, {}),          # Swin (timm's drop path 0.1)
    "ViTamin-S": (shrink_timm, {"timm_drop_path": 0.5}),        # MBConv stages + ViT
    "MobileCLIP2-S0": (shrink_timm, {"timm_drop_path": 0.5}),   # FastViT (BatchNorm branches)
    "xlm-roberta-base-ViT-B-32": (shrink, {}),                  # BERT-type text tower
    "mt5-base-ViT-B-32": (shrink, {}),                          # T5 text tower
    "nllb-clip-base": (shrink, {}),                             # M2M-100 text tower
    "coca_ViT-B-32": (shrink_coca, {}),                         # CoCa's multimodal decoder
}

GRAPH_MODE_LIMITS = {"EVA02-B-16": "rotary embedding"}


def _config(name, folder):
    with open(os.path.join(OPENCLIP_CONFIGS, name + ".json")) as f:
        cfg = json.load(f)
    shrinker, overrides = KINDS[name]
    cfg = shrinker(cfg, folder=folder) if shrinker is not shrink_timm else shrinker(cfg)
    cfg["vision_cfg"].update(overrides)
    return cfg


def _steps(cfg, init, checkpointing, steps=2):
    """Losses, gradients and written states of ``steps`` gradient computations."""
    model = create_model(config=cfg, family="coca" if "multimodal_cfg" in cfg else None)
    for name, p in model.parameters_and_names():
        p.set_data(ms.Tensor(init[name]))
    size = model.image_size if isinstance(model.image_size, int) else model.image_size[-1]
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((3, 3, size, size)).astype(np.float32))
    tokens = ms.Tensor(random_tokens(cfg).astype(np.int32))
    # a fixed random weighting of every output, so that no gradient cancels out
    outputs = model.construct(images, tokens)
    keep = tuple(i for i, o in enumerate(outputs) if o.ndim)
    weights = tuple(ms.Tensor(rng.standard_normal(outputs[i].shape).astype(np.float32)) for i in keep)
    if checkpointing:
        model.set_grad_checkpointing(True)
    model.set_train(True)
    seed_rng_states(model, 3)

    def loss_fn(images, tokens):
        out = model.construct(images, tokens)
        total = 0.0
        for i, w in zip(keep, weights):
            total = total + (out[i].astype(ms.float32) * w).sum()
        return total

    grad = ms.value_and_grad(loss_fn, None, model.trainable_params())
    results = []
    for _ in range(steps):
        loss, grads = grad(images, tokens)
        results.append((float(loss.asnumpy()), [g.asnumpy() for g in grads]))
    states = {n: p.asnumpy() for n, p in model.parameters_and_names() if n.split(".")[-1] in STATE_LEAVES}
    return results, states


def _recomputing_train_step(model, accumulate_steps=1):
    """A CLIP train step over ``model`` with recomputation switched on."""
    from mindclip.losses import ClipLoss, ContrastiveObjective
    from mindclip.training import AdamW, TrainStep

    model.set_grad_checkpointing(True)
    return TrainStep(ContrastiveObjective(model, ClipLoss()), AdamW(model.trainable_params(), [1e-5]),
                     accumulate_steps=accumulate_steps)


# GRAPH mode (where the train step runs) for each way a block is recomputed: stateless with
# a mask input (ViT), BatchNorm kept out of the recomputation (ResNet), draws replayed
# (ConvNeXt), block by block through call() (CoCa's decoder), and the refusal; the other
# towers' blocks take one of these ways (FastViT's both: BatchNorm and drop path).
GRAPH_KINDS = ("ViT-B-32", "RN50", "convnext_base_w", "EVA02-B-16", "coca_ViT-B-32")


@pytest.mark.parametrize("name,mode", [(n, "pynative") for n in sorted(KINDS)]
                         + [(n, "graph") for n in GRAPH_KINDS])
def test_recomputed_blocks_give_the_same_gradients_and_states(name, mode, tmp_path):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        cfg = _config(name, str(tmp_path))
        model = create_model(config=cfg, family="coca" if "multimodal_cfg" in cfg else None)
        init = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
        assert set_grad_checkpointing(model, False) >= 2  # the blocks are found
        if name in GRAPH_MODE_LIMITS and mode == "graph":  # refused, not run wrong
            with pytest.raises(ValueError, match=GRAPH_MODE_LIMITS[name]):
                model.set_grad_checkpointing(True)
            return
        if name in GRAPH_MODE_LIMITS:  # the train step runs in GRAPH mode: refused there too
            with pytest.raises(ValueError, match=GRAPH_MODE_LIMITS[name]):
                _recomputing_train_step(model)
        plain, plain_states = _steps(cfg, init, False)
        recomputed, states = _steps(cfg, init, True)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for (loss0, grads0), (loss1, grads1) in zip(plain, recomputed):
        assert loss1 == pytest.approx(loss0, rel=1e-6)
        for g0, g1 in zip(grads0, grads1):
            assert np.abs(g1 - g0).max() <= 1e-6 * max(np.abs(g0).max(), 1e-12)
    assert plain_states.keys() == states.keys()
    for key, value in plain_states.items():
        np.testing.assert_array_equal(states[key], value, err_msg=key)
    drawn = [k for k in states if is_rng_state(k)]
    if KINDS[name][1].get("timm_drop_path") or name.startswith("swin"):
        assert drawn and all(states[k][1] == 2 for k in drawn)  # one draw per step, not two


def test_recomputation_with_accumulation_updates_as_accumulation_alone(tmp_path):
    """Both features in the train step (GRAPH mode): one step of 2 micro-batches gives the
    weights the same step gives without recomputation."""
    from mindclip.losses import ClipLoss, ContrastiveObjective
    from mindclip.training import AdamW, TrainStep

    rng = np.random.default_rng(0)
    cfg = _config("ViT-B-32", str(tmp_path))
    init, results = None, []
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for recompute in (False, True):
            model = create_model(config=cfg)
            init = init or {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
            for n, p in model.parameters_and_names():
                p.set_data(ms.Tensor(init[n]))
            model.set_grad_checkpointing(recompute)
            model.set_train(True)
            step = TrainStep(ContrastiveObjective(model, ClipLoss()), AdamW(model.trainable_params(), [1e-3]),
                             accumulate_steps=2)
            if not results:
                images = ms.Tensor(rng.standard_normal((4, 3, model.image_size, model.image_size)).astype(np.float32))
                tokens = ms.Tensor(rng.integers(1, 1000, (4, 77)).astype(np.int32))
            loss = float(step(images, tokens)[0].asnumpy())
            results.append((loss, {n: p.asnumpy() for n, p in model.parameters_and_names()}))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    (loss0, weights0), (loss1, weights1) = results
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert weights0.keys() == weights1.keys()
    moved = 0
    for key, value in weights0.items():
        assert np.abs(weights1[key] - value).max() <= 1e-6 * max(np.abs(value).max(), 1e-12), key
        moved += not np.array_equal(value, init[key])
    assert moved > 10  # the step changed the weights
