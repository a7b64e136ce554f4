"""Shared fixtures: MindSpore context, reference open_clip models built with random weights."""
import gc
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Tests never reach the network: named weights come from caches the tests write themselves.
os.environ["HF_HUB_OFFLINE"] = "1"

import mindspore as ms  # noqa: E402
import torch  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
# One kernel thread per test process: pytest runs two processes on the two cores, and two
# threads each left both workers waiting on each other's threads (test_grad_checkpointing +
# test_timm_conv_towers: 311 s with MindSpore's and torch's default threads, 254 s with one).
# The fused kernels' threaded paths are tested with two threads (test_models_and_transforms).
from mindclip import set_num_threads  # noqa: E402

set_num_threads(1)
torch.set_num_threads(1)

# The order pytest-xdist hands the files to its two workers (pytest.ini: --dist loadfile
# --no-loadscope-reorder): the longest first. Its default order (most tests first) left
# one-test files of two minutes (a killed-and-resumed run, a 2-rank job) to the end, with
# one worker idle; test time per file as measured 2026-12-07 (AMD EPYC Zen 3, 2 cores).
LONGEST_FIRST = (
    "test_training_runs.py",        # 281 s
    "test_grad_checkpointing.py",   # 256
    "test_declip_training.py",      # 244
    "test_mixed_precision.py",      # 217
    "test_timm_conv_towers.py",     # 193
    "test_dual_encoder.py",         # 188
    "test_coca.py",                 # 159
    "test_cluster_runs.py",         # 133
    "test_reliability.py",          # 133
    "test_timm_towers.py",          # 127
    "test_coca_training.py",        # 120
    "test_declip.py",               # 110
    "test_hub.py",                  # 108
    "test_public_calls.py",         # 108
    "test_convert_parity.py",       # 101
    "test_rng.py",                  # 99
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_collection_finish(session):
    # Every module is imported (torch, transformers, open_clip, MindSpore): their objects live
    # as long as the worker, and each full collection walked them all again while tests
    # compiled graphs — 8.4 s of test_public_calls.py's 104 s, 2.9 s with them frozen.
    gc.collect()
    gc.freeze()


# fp32 feature parity tolerance (max abs diff) from the design's numerics rules.
FEATURE_ATOL = 1e-4


def build_openclip(name: str, seed: int = 0):
    """A randomly initialised open_clip ``CLIP`` of one of our architectures (eval mode).

    BatchNorm running statistics and scales are randomised too, so that a converter that
    dropped or swapped them could not pass.
    """
    import open_clip

    from mindclip import get_model_config

    cfg = get_model_config(name).to_dict()
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                                 text_cfg=cfg["text_cfg"], quick_gelu=cfg["quick_gelu"])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
        model.logit_scale.fill_(float(np.log(1 / 0.07)) + 0.3)
    # open_clip.create_model sets these; its hub writer needs them
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    return model.eval()


CAPTIONS = ["a photo of a cat", "a diagram of a neural network", "", "🐶 dog & <b>bone</b>"]


def reference_inputs(image_size: int, batch: int = 2, seed: int = 1):
    """Random images and tokenized captions (open_clip's tokenizer) for parity checks."""
    import open_clip

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, image_size, image_size, generator=gen)
    tokens = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:batch])
    return images, tokens


def reference_outputs(model, images, tokens):
    with torch.no_grad():
        image_features, text_features, scale = model(images, tokens)
        logits = scale * image_features @ text_features.T
    return image_features.numpy(), text_features.numpy(), logits.numpy()


def mindclip_outputs(model, images, tokens):
    image_features, text_features, scale = model(ms.Tensor(images.numpy()),
                                                 ms.Tensor(tokens.numpy().astype(np.int32)))
    image_features, text_features = image_features.asnumpy(), text_features.asnumpy()
    logits = float(scale.asnumpy()) * image_features @ text_features.T
    return image_features, text_features, logits


def build_for_loading(name: str):
    """Our ``name`` model as ``create_model(name)`` builds it (inference mode), its parameters
    left for the weights the test loads next: no random draw to replace (9 s of a full-size
    ViT-B build on a 2-core CPU; ``Family.build_model(initialize=False)``)."""
    from mindclip.factory import get_model_config, model_family

    model = model_family(name).build_model(get_model_config(name), initialize=False)
    model.set_train(False)
    return model


def load_openclip_state(model, reference, family: str):
    """Load an open_clip ``reference``'s state dict into ``model`` in memory, through the
    open_clip-family converter, every parameter required."""
    from mindclip.convert.openclip_family import expected_shapes, openclip_to_ms
    from mindclip.models.rng import is_rng_state

    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    tensors = openclip_to_ms(state, expected_shapes(family, model.config))
    params = {k: ms.Parameter(ms.Tensor(v)) for k, v in tensors.items()}
    missing = ms.load_param_into_net(model, params, strict_load=True)[0]
    assert not [k for k in missing if not is_rng_state(k)]  # draw states are no weights


def assert_parity(ours, ref, atol=FEATURE_ATOL):
    for name, a, b in zip(("image features", "text features", "logits"), ours, ref):
        assert a.shape == b.shape, f"{name}: shape {a.shape} vs {b.shape}"
        diff = float(np.abs(a - b).max())
        assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"


@pytest.fixture(scope="session")
def tiny_openclip():
    return build_openclip("ViT-Tiny-8")


@pytest.fixture()
def tiny_store(tmp_path, monkeypatch):
    """A temporary weight store ($MINDCLIP_HOME) with random ViT-Tiny-8 (and -quickgelu)
    weights installed under those names, for front doors that load a model by name."""
    from mindclip import create_model
    from mindclip.models.store import store_path

    monkeypatch.setenv("MINDCLIP_HOME", str(tmp_path / "mindclip_home"))
    ms.set_seed(11)
    for name in ("ViT-Tiny-8", "ViT-Tiny-8-quickgelu"):
        create_model(name).save_pretrained(store_path(name))
    return str(tmp_path / "mindclip_home")


def whole_and_accumulated_steps(model, make_objective, batch, extra_state=lambda objective: {}):
    """Two train steps on ``batch`` from the model's current weights, without and then with
    2-way gradient accumulation (AdamW with eps 1, where its update is about lr x gradient for
    small gradients, so a gradient difference shows in the weights); the weights are restored
    afterwards. Returns ``(initial weights, [(losses, state)] * 2)``: per step the total and
    each term; the model's parameters and ``extra_state(objective)`` after the steps."""
    from mindclip.training import AdamW, TrainStep

    init = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
    runs = []
    try:
        for accum in (1, 2):
            for n, p in model.parameters_and_names():
                p.set_data(ms.Tensor(init[n]))
            model.set_train(True)
            objective = make_objective(model)
            opt = AdamW(model.trainable_params(), np.full(4, 1e-2, np.float32), weight_decay=0.1, eps=1.0)
            step = TrainStep(objective, opt, accumulate_steps=accum)
            losses = []
            for _ in range(2):
                loss, terms, _, _ = step(*batch)
                losses.append([float(loss.asnumpy())] + [float(t.asnumpy()) for t in terms])
            state = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
            runs.append((losses, {**state, **extra_state(objective)}))
    finally:
        model.set_train(False)
        for n, p in model.parameters_and_names():
            p.set_data(ms.Tensor(init[n]))
    return init, runs
