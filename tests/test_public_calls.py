"""The public calls (``encode_image``, ``encode_text``, ``model(...)``, and what ``generate``
runs) of every family: compiled in both modes with the values of the uncompiled graph-level
methods, and bad inputs refused at the boundary with a message in the user's terms."""
import numpy as np
import pytest
from PIL import Image

import mindspore as ms
import mindclip
from mindclip.models.bert import BertConfig
from mindclip.models.clip import l2_normalize
from mindclip.models.dual_encoder import DualEncoderConfig, DualEncoderModel


def _dual_encoder():
    text = BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=128, max_position_embeddings=40)
    vision = mindclip.get_model_config("ViT-Tiny-8").vision_cfg
    return DualEncoderModel(DualEncoderConfig(projection_dim=32, vision_cfg=vision, text_cfg=text,
                                              max_seq_length=16))


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((2, 3, model.image_size, model.image_size)).astype(np.float32)
    if isinstance(model, DualEncoderModel):
        ids = rng.integers(3, 300, (2, 16)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[1, 10:] = 0
        return images, (ids, mask)
    return images, (np.asarray(mindclip.get_tokenizer(model)(["a photo of a cat", "two dogs"])),)


MODELS = {"vit": lambda: mindclip.create_model("ViT-Tiny-8"),
          "resnet": lambda: mindclip.create_model("RN-Tiny"),
          "declip": lambda: mindclip.create_model("DeCLIP-Tiny-8"),
          "dual_encoder": _dual_encoder,
          "siglip": lambda: mindclip.create_model("SigLIP-Tiny-8"),
          "coca": lambda: mindclip.create_model("CoCa-Tiny-8")}


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("family", sorted(MODELS))
def test_public_calls_equal_the_uncompiled_methods(family, mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        ms.set_seed(0)
        model = MODELS[family]()
        images, text = _inputs(model)
        t_images, t_text = ms.Tensor(images), tuple(ms.Tensor(t) for t in text)
        ms.set_context(mode=ms.PYNATIVE_MODE)  # the reference: op by op
        eager_image = model.image_features(t_images).asnumpy()
        eager_text = model.text_features(*t_text).asnumpy()
        eager_forward = [x.asnumpy() for x in model.construct(t_images, *t_text)]
        ms.set_context(mode=mode)
        for ours, ref in ((model.encode_image(t_images, normalize=False), eager_image),
                          (model.encode_image(images, normalize=False), eager_image),  # numpy in
                          (model.encode_text(*t_text, normalize=False), eager_text),
                          (model.encode_image(t_images, normalize=True),
                           l2_normalize(ms.Tensor(eager_image)).asnumpy()),
                          (model.encode_text(*text, normalize=True),
                           l2_normalize(ms.Tensor(eager_text)).asnumpy())):
            np.testing.assert_allclose(ours.asnumpy(), ref, atol=1e-5)
        for ours, ref in zip(model(images, *text), eager_forward):
            np.testing.assert_allclose(ours.asnumpy(), ref, atol=1e-5)
        assert "_compiled_calls" in model.__dict__  # the public calls went through the graphs
    finally:
        ms.set_context(mode=previous)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_generation_graphs_equal_the_uncompiled_methods(mode):
    """What ``generate`` runs (image tokens, the decoder's image keys/values, one decoding
    step), compiled in both modes, against the graph-level methods op by op."""
    from mindclip.models.compiled import compiled

    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        ms.set_seed(0)
        model = mindclip.create_model("CoCa-Tiny-8")
        model.set_train(False)
        images, (tokens,) = _inputs(model)
        images, tokens = ms.Tensor(images), ms.Tensor(tokens[:, :8])
        position = ms.Tensor(np.array([4], np.int32))
        ms.set_context(mode=ms.PYNATIVE_MODE)
        eager_tokens = model.image_tokens(images)
        eager_context = model.decode_context(eager_tokens)
        eager_logits = model.decode_logits(eager_context, tokens, position)
        ms.set_context(mode=mode)
        image_tokens = compiled(model, "image_tokens")(images)
        context = compiled(model, "decode_context")(image_tokens)
        logits = compiled(model, "decode_step")(context, tokens, position)
        np.testing.assert_allclose(image_tokens.asnumpy(), eager_tokens.asnumpy(), atol=1e-5)
        for ours, ref in zip(context, eager_context):
            np.testing.assert_allclose(ours.asnumpy(), ref.asnumpy(), atol=1e-5)
        np.testing.assert_allclose(logits.asnumpy(), eager_logits.asnumpy(), atol=1e-5)
    finally:
        ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def tiny():
    return mindclip.create_model("ViT-Tiny-8")


@pytest.mark.parametrize("images,message", [
    (np.zeros((2, 3, 64, 64), np.float32), "this model takes 32x32 images (its image_size), got 64x64"),
    (np.zeros((3, 32, 32), np.float32), "got shape (3, 32, 32) (a single image? add a batch axis"),
    (np.zeros((2, 32, 32, 3), np.float32), "(channels last? transpose to (B, C, H, W))"),
    (np.zeros((2, 3, 32, 32), np.uint8), "expected float values (normalised pixels), got uint8"),
])
def test_bad_images_are_refused_in_the_users_terms(tiny, images, message):
    with pytest.raises((ValueError, TypeError)) as info:
        tiny.encode_image(images)
    assert message in str(info.value)
    with pytest.raises((ValueError, TypeError)):
        tiny(images, np.zeros((2, 77), np.int32))


@pytest.mark.parametrize("ids,message", [
    (np.full((1, 77), 49408, np.int32), "id 49408 is outside this model's vocabulary [0, 49408)"),
    (np.full((1, 77), -1, np.int32), "id -1 is outside"),
    (np.zeros((1, 78), np.int32), "78 tokens per text, this model takes at most 77"),
    (np.zeros((1, 77), np.float32), "expected integer ids, got float32"),
    (np.zeros(77, np.int32), "(add a batch axis: ids[None])"),
])
def test_bad_token_ids_are_refused_in_the_users_terms(tiny, ids, message):
    with pytest.raises((ValueError, TypeError)) as info:
        tiny.encode_text(ids)
    assert message in str(info.value)


def test_dual_encoder_text_inputs_are_checked():
    model = _dual_encoder()
    ids = np.ones((2, 16), np.int32)
    with pytest.raises(ValueError, match=r"attention_mask: expected the shape of input_ids \(2, 16\), got \(2, 15\)"):
        model.encode_text(ids, np.ones((2, 15), np.int32))
    with pytest.raises(TypeError, match="takes input_ids and attention_mask"):
        model.encode_text(ids)
    with pytest.raises(ValueError, match="id 300 is outside"):
        model.encode_text(np.full((2, 16), 300, np.int32), np.ones((2, 16), np.int32))


def test_pipeline_inputs_name_what_is_wrong(tmp_path, tiny):
    classify = mindclip.pipeline("zero_shot_image_classification", model=tiny, candidate_labels=["a", "b"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=f"cannot read image {broken}"):
        classify(str(broken))
    with pytest.raises(FileNotFoundError, match="image file not found: .*missing.png"):
        classify(str(tmp_path / "missing.png"))
    with pytest.raises(TypeError, match="not a int"):
        classify(7)
    assert len(classify(Image.new("RGB", (40, 30)))) == 2
