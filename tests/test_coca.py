"""CoCa against open_clip: features and decoder logits after conversion (shrunk per option
group, full size once), the reverse conversion, the loss and its gradients, generation (beam
search ids from open_clip 3.3 + transformers 4.55.4 fixtures; top-k/top-p distributions
against transformers' processors) and the image_to_text pipeline."""
import copy
import json
import os

import mindspore as ms
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import mindclip
from conftest import FEATURE_ATOL, ROOT, whole_and_accumulated_steps
from mindclip import create_model
from mindclip.convert.cli import main as convert_cli
from test_openclip_zoo import (OPENCLIP_CONFIGS, _hf_model_type, hub_folder, random_tokens,
                               tiny_hf_config)

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "coca_generation")


def shrink_coca(cfg, folder):
    """Depth 2, two heads of the configs' head widths (64), 96-pixel images, vocabulary 1000."""
    cfg = copy.deepcopy(cfg)
    v, t, m = cfg["vision_cfg"], cfg["text_cfg"], cfg["multimodal_cfg"]
    v.update(layers=2, width=128, image_size=3 * v["patch_size"])
    if v.get("attentional_pool"):
        v["attn_pooler_heads"] = 2
    cfg["embed_dim"] = 128
    if "hf_model_name" in t:
        t["hf_model_name"] = tiny_hf_config(_hf_model_type(t["hf_model_name"]), folder)
        t["width"] = 128
    else:
        t.update(layers=2, width=128, heads=2)
    t["vocab_size"] = 1000
    m.update(layers=2, width=128, heads=2, vocab_size=1000)
    return cfg


def build_coca_reference(cfg, name):
    """open_clip's CoCa for ``cfg``, every parameter moved off its initial value. open_clip
    3.3 never initialises the decoder's ``text_projection`` (``torch.empty``: whatever the
    memory held, sometimes 1e37); it is drawn here as open_clip's ``init_parameters`` means to (that method fails if called)."""
    open_clip.factory._MODEL_CONFIGS[name] = cfg
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained_text=False)
    torch.nn.init.normal_(model.text_decoder.text_projection, std=model.text_decoder.width ** -0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _reference_outputs(reference, images, tokens):
    with torch.no_grad():
        out = reference(torch.from_numpy(images), torch.from_numpy(tokens))
    return out["image_features"].numpy(), out["text_features"].numpy(), out["logits"].numpy()


def _check(ours, expected):
    for what, a, b in zip(("image", "text", "logits"), ours, expected):
        assert a.shape == b.shape, (what, a.shape, b.shape)
        where = np.unravel_index(np.abs(a - b).argmax(), a.shape)
        assert np.abs(a - b).max() <= FEATURE_ATOL, (what, float(np.abs(a - b).max()), where, a[where], b[where])


@pytest.mark.parametrize("name", ["coca_ViT-B-32", "coca_roberta-ViT-B-32"])
def test_coca_converts_both_ways_with_open_clips_features_and_logits(name, tmp_path):
    with open(os.path.join(OPENCLIP_CONFIGS, name + ".json")) as f:
        cfg = shrink_coca(json.load(f), tmp_path / "hf_text_model")
    reference = build_coca_reference(cfg, "shrunk-" + name)
    folder = hub_folder(reference, cfg, tmp_path / "hub")
    assert convert_cli(["--torch_path", folder, "--mindspore_path", str(tmp_path / "ms")]) == 0
    model = create_model(pretrained=str(tmp_path / "ms"))
    assert model.family == "coca"
    size = cfg["vision_cfg"]["image_size"]
    images = np.random.default_rng(1).standard_normal((3, 3, size, size)).astype(np.float32)
    tokens = random_tokens(cfg)
    expected = _reference_outputs(reference, images, tokens)
    image, text, logits, scale = model(images, tokens.astype(np.int32))
    _check((image.asnumpy(), text.asnumpy(), logits.asnumpy()), expected)
    np.testing.assert_allclose(model.encode_image(images, normalize=True).asnumpy(), expected[0], atol=FEATURE_ATOL)
    # open_clip's CoCa normalises unless told not to (its CLIP does not): the same defaults here
    with torch.no_grad():
        t_images, t_tokens = torch.from_numpy(images), torch.from_numpy(tokens)
        for ours, theirs in ((model.encode_image(images), reference.encode_image(t_images)),
                             (model.encode_text(tokens.astype(np.int32)), reference.encode_text(t_tokens)),
                             (model.encode_image(images, normalize=False),
                              reference.encode_image(t_images, normalize=False))):
            np.testing.assert_allclose(ours.asnumpy(), theirs.numpy(), atol=FEATURE_ATOL)

    back = tmp_path / "back"
    assert convert_cli(["--reverse", "--mindspore_path", str(tmp_path / "ms"), "--torch_path", str(back)]) == 0
    again = open_clip.create_model(f"local-dir:{back}").eval()
    for a, b in zip(_reference_outputs(again, images, tokens), expected):
        np.testing.assert_array_equal(a, b)


def test_coca_vit_b_32_full_size_in_graph_mode():
    """The one full-size check: open_clip's coca_ViT-B-32 (random), features and logits."""
    from conftest import build_for_loading, load_openclip_state

    reference = build_coca_reference(open_clip.get_model_config("coca_ViT-B-32"), "full-coca_ViT-B-32")
    model = build_for_loading("coca_ViT-B-32")
    load_openclip_state(model, reference, "coca")
    images = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    tokens = mindclip.get_tokenizer(model)(["a photo of a cat", "two dogs playing in the snow"])
    expected = _reference_outputs(reference, images, tokens.astype(np.int64))
    model.set_train(False)
    image, text, logits, _ = model(images, tokens)
    _check((image.asnumpy(), text.asnumpy(), logits.asnumpy()), expected)


# ---- generation, against the fixtures open_clip 3.3 + transformers 4.55.4 wrote ------------

@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory):
    """The fixtures' CoCa, as an open_clip folder converted by tools/convert_weight.py, and
    the same weights in open_clip (for what needs no BeamSearchScorer)."""
    from safetensors.torch import load_file

    with open(os.path.join(FIXTURES, "cases.json")) as f:
        meta = json.load(f)
    path = tmp_path_factory.mktemp("coca_fixture")
    name = "coca-tiny-fixture"
    open_clip.factory._MODEL_CONFIGS[name] = meta["model_cfg"]
    reference = open_clip.create_model(name).eval()
    reference.load_state_dict(load_file(os.path.join(FIXTURES, "model.safetensors")))
    folder = hub_folder(reference, meta["model_cfg"], path / "hub")
    assert convert_cli(["--torch_path", folder, "--mindspore_path", str(path / "ms")]) == 0
    return create_model(pretrained=str(path / "ms")), reference, meta, np.load(os.path.join(FIXTURES, "images.npy"))


@pytest.mark.parametrize("case", range(6))
def test_beam_search_ids_equal_open_clips(fixture_model, case):
    model, _, meta, images = fixture_model
    args = meta["cases"][case]["args"]
    ids = model.generate(images, sot_token_id=meta["sot"], eos_token_id=meta["eos"], **args)
    assert ids.tolist() == meta["cases"][case]["ids"], args


@pytest.mark.parametrize("generation_type,kwargs", [("top_k", {"top_k": 5}), ("top_p", {"top_p": 0.3}),
                                                    ("top_k", {"top_k": 40, "repetition_penalty": 1.3})])
def test_sampling_step_distribution_equals_open_clips_processors(fixture_model, generation_type, kwargs):
    """At a step of sampling, the probabilities drawn from equal those open_clip computes: its
    model's logits through transformers' processors and warper, softmax at the temperature."""
    from transformers import (LogitsProcessorList, MinLengthLogitsProcessor,
                              RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper)

    from mindclip.generation import _decode_step, filtered_scores
    from mindclip.generation.processors import softmax
    from mindclip.models.compiled import compiled

    model, reference, meta, images = fixture_model
    prefix = np.array([[meta["sot"], 5, 17, 17, 40], [meta["sot"], 3, 3, 9, 61], [meta["sot"], 7, 8, 9, 10]])
    penalty = kwargs.get("repetition_penalty", 1.0)
    temperature = 0.7
    with torch.no_grad():
        logits = reference(torch.from_numpy(images), torch.from_numpy(prefix), output_labels=False)["logits"][:, -1]
    processors = LogitsProcessorList([MinLengthLogitsProcessor(8, torch.tensor([meta["eos"]])),
                                      RepetitionPenaltyLogitsProcessor(penalty)])
    warper = TopKLogitsWarper(kwargs["top_k"]) if generation_type == "top_k" else TopPLogitsWarper(kwargs["top_p"])
    ids = torch.from_numpy(prefix)
    want = torch.softmax(warper(ids, processors(ids, logits)) / temperature, dim=-1).numpy()

    model.set_train(False)
    step = _decode_step(model, compiled(model, "image_tokens")(ms.Tensor(images)), 20, model.pad_id)
    ours = filtered_scores(prefix, step(prefix), 8, [meta["eos"]], penalty, generation_type,
                           kwargs.get("top_k", 1), kwargs.get("top_p", 0.1))
    got = softmax(ours / temperature)
    np.testing.assert_array_equal(got == 0, want == 0)
    assert np.abs(got - want).max() <= 1e-5
    # and a sampled caption only ever takes allowed tokens, ends, and is padded after its end
    out = model.generate(images, generation_type=generation_type, seq_len=12, seed=0,
                         sot_token_id=meta["sot"], eos_token_id=meta["eos"], **kwargs)
    assert out.shape[0] == 3 and out.shape[1] <= 12 and (out[:, 0] == meta["sot"]).all()
    for row in out.tolist():  # after its end token a row only holds padding
        if meta["eos"] in row:
            assert set(row[row.index(meta["eos"]) + 1:]) <= {model.pad_id}


def test_loss_terms_and_gradients_equal_open_clips_coca_loss(fixture_model):
    from open_clip.loss import CoCaLoss

    from mindclip.families.coca_objective import CoCaObjective

    model, reference, meta, images = fixture_model
    rng = np.random.default_rng(4)
    tokens = np.zeros((3, 76), np.int64)
    for i, n in enumerate((6, 12, 20)):
        tokens[i, 0], tokens[i, 1:n] = meta["sot"], rng.integers(1, 98, n - 1)
        tokens[i, n] = meta["eos"]
    reference.train()
    out = reference(torch.from_numpy(images), torch.from_numpy(tokens))
    clip_loss, caption_loss = CoCaLoss(caption_loss_weight=2.0, clip_loss_weight=1.0)(
        out["image_features"], out["text_features"], out["logits"], out["labels"], out["logit_scale"])
    (clip_loss + caption_loss).backward()
    reference.eval()

    objective = CoCaObjective(model, {"clip": 1.0, "caption": 2.0}, False, True, 0, 1, None)
    params = model.trainable_params()
    model.set_train(True)
    grad_fn = ms.value_and_grad(objective, None, params, has_aux=True)
    (total, (contrastive, caption)), grads = grad_fn(ms.Tensor(images), ms.Tensor(tokens.astype(np.int32)))
    model.set_train(False)
    assert abs(float(contrastive.asnumpy()) - float(clip_loss)) <= 1e-5
    assert abs(float(caption.asnumpy()) - float(caption_loss)) <= 1e-5
    from mindclip.convert.openclip_family import ms_to_openclip

    ours = ms_to_openclip({p.name: g.asnumpy() for p, g in zip(params, grads)}, model.config)
    theirs = dict(reference.named_parameters())
    assert set(ours) == {k for k, p in theirs.items() if p.requires_grad}
    for name, grad in ours.items():
        want = theirs[name].grad.numpy().reshape(grad.shape)
        assert np.abs(grad - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunk_rows", [7, 4096])
def test_projected_caption_nll_equals_torchs_cross_entropy(chunk_rows, fused, monkeypatch):
    """The chunked projection + next-token loss: per-sample sums and the gradients of the
    decoder outputs and the vocabulary projection equal torch's ``cross_entropy`` with
    ``ignore_index`` (chunks that do not divide the rows; one chunk for all), through the
    fused CPU kernels and through MindSpore's ops (MINDCLIP_CPU_KERNELS=0)."""
    import torch.nn.functional as F

    from mindclip.families.coca_objective import ProjectedCaptionNLL, _RowNLL, _RowNLLGrad

    rng = np.random.default_rng(5)
    b, n, d, v, pad = 3, 9, 16, 50, 0
    hidden = rng.standard_normal((b, n, d)).astype(np.float32)
    weight = rng.standard_normal((d, v)).astype(np.float32) * 0.5
    labels = rng.integers(1, v, (b, n)).astype(np.int32)
    labels[0, 5:], labels[2, 2:] = pad, pad
    dout = np.array([1.0, 0.5, 2.0], np.float32)

    h, w = torch.tensor(hidden, requires_grad=True), torch.tensor(weight, requires_grad=True)
    per_token = F.cross_entropy((h @ w).reshape(-1, v), torch.tensor(labels, dtype=torch.long).reshape(-1),
                                ignore_index=pad, reduction="none").reshape(b, n)
    want = per_token.sum(1)
    (want * torch.tensor(dout)).sum().backward()

    monkeypatch.setenv("MINDCLIP_CPU_KERNELS", "1" if fused else "0")
    nll = ProjectedCaptionNLL(pad, chunk_rows=chunk_rows)
    assert isinstance(nll.row_nll, _RowNLL) != fused and isinstance(nll.row_nll_grad, _RowNLLGrad) != fused
    got = nll(ms.Tensor(hidden), ms.Tensor(weight), ms.Tensor(labels))
    np.testing.assert_allclose(got.asnumpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    def weighted(x, y, labels_, dout_):
        return (nll(x, y, labels_) * dout_).sum()

    dh, dw = ms.grad(weighted, (0, 1))(ms.Tensor(hidden), ms.Tensor(weight), ms.Tensor(labels), ms.Tensor(dout))
    np.testing.assert_allclose(dh.asnumpy(), h.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.asnumpy(), w.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_accumulated_step_equals_one_large_batch(fixture_model):
    """``runner.accumulate_steps`` for CoCa, open_clip's ``--accum-freq``: each micro-batch
    re-run with gradients against the cached features of all, the caption loss the mean over
    every token of the batch; two steps give the losses and weights of two steps on the whole
    batch (conftest's whole_and_accumulated_steps)."""
    from mindclip.families.coca_objective import CoCaObjective

    model, _, meta, images = fixture_model
    batch = ms.Tensor(np.concatenate([images, -images[:1]]))
    rng = np.random.default_rng(5)
    tokens = np.zeros((4, 76), np.int32)
    for i, n in enumerate((6, 12, 20, 3)):  # micro-batches with different token counts
        tokens[i, 0], tokens[i, 1:n] = meta["sot"], rng.integers(1, 98, n - 1)
        tokens[i, n] = meta["eos"]
    init, runs = whole_and_accumulated_steps(
        model, lambda m: CoCaObjective(m, None, False, True, 0, 1, (0.0, float(np.log(100)))),
        (batch, ms.Tensor(tokens)))
    (whole, weights), moved = runs[0], max(np.abs(runs[0][1][k] - init[k]).max() for k in init)
    assert moved > 1e-3  # the steps did change the weights
    for losses, accumulated in runs[1:]:
        np.testing.assert_allclose(losses, whole, rtol=1e-5)
        worst = max(float(np.abs(accumulated[k] - weights[k]).max()) for k in weights)
        assert worst <= 1e-6, worst


def test_image_to_text_pipeline_and_keywords(fixture_model):
    model, _, meta, _ = fixture_model
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)) for _ in range(3)]
    pipe = mindclip.pipeline("image_to_text", model=model, batch_size=2, sot_token_id=meta["sot"],
                             eos_token_id=meta["eos"], num_beams=3, num_beam_groups=1)
    rows = pipe(pictures)
    assert len(rows) == 3 and all(list(r[0]) == ["generated_text"] for r in rows)
    batch = np.stack([pipe.transform(p) for p in pictures])
    kwargs = dict(sot_token_id=meta["sot"], eos_token_id=meta["eos"], num_beams=3, num_beam_groups=1)
    decode = lambda ids: mindclip.generation.decode_captions(pipe.tokenizer, ids)  # noqa: E731
    # batches of 2, the last one padded with copies of its last image
    expected = decode(model.generate(batch[:2], **kwargs)) + decode(
        model.generate(np.concatenate([batch[2:], batch[2:]]), **kwargs))[:1]
    assert [r[0]["generated_text"] for r in rows] == expected
    single = pipe(pictures[0], seq_len=8)
    assert list(single[0]) == ["generated_text"]
    with pytest.raises(ValueError, match="needs a model that writes text"):
        mindclip.pipeline("image_to_text", model=create_model("ViT-Tiny-8"))


def test_caption_decoding_and_generation_errors():
    tokenizer = mindclip.get_tokenizer(create_model("CoCa-Tiny-8"))
    ids = tokenizer(["a photo of the number seven."])[0]
    assert tokenizer.decode_caption(ids) == "a photo of the number seven ."
    model = create_model("CoCa-Tiny-8")
    images = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="generation_type has to be one of"):
        model.generate(images, generation_type="greedy")
    with pytest.raises(ValueError, match="seq_len .* must be larger than min_seq_len"):
        model.generate(images, seq_len=5)
    with pytest.raises(ValueError, match="exceeds the text tower's context length 12"):
        model.generate(images, seq_len=20)


def test_coca_run_configs_are_valid():
    from mindclip.config import load_config
    from mindclip.hub import pretrained_cfg

    cfg = load_config(os.path.join(ROOT, "configs", "coca", "run_coca_vit_b_32_finetune_coco.yaml"))
    assert mindclip.factory.model_family(cfg["model"]["name"]).name == "coca"
    assert pretrained_cfg(cfg["model"]["name"], cfg["model"]["pretrained"])["hf_hub"]
    assert cfg["loss"]["weights"] == {"clip": 0.0, "caption": 1.0}
    demo = load_config(os.path.join(ROOT, "configs", "demo", "run_coca_tiny_digits.yaml"))
    assert mindclip.factory.model_family(demo["model"]["name"]).name == "coca"
