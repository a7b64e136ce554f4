"""The dual-encoder family against Hugging Face's VisionTextDualEncoderModel (transformers),
built with random weights in the test, with real tokenizer folders trained here by the
`tokenizers` library: conversion both ways, features, loss, tokenizer ids, run_clip.py's
from_vision_text_pretrained assembly, and a short COCO fine-tuning run."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import mindspore as ms
from conftest import FEATURE_ATOL, ROOT

import mindclip
import run_mindformer
from mindclip.convert.cli import main as convert_cli
from mindclip.losses import ClipLoss, ContrastiveObjective
from mindclip.training.logger import read_metrics

transformers = pytest.importorskip("transformers")

CORPUS = ["A photo of a Cat!", "a diagram of a neural network", "the number seven, handwritten.",
          "café naïve résumé", "東京 タワー at night", "two dogs playing in the snow",
          "a red car parked near a building", "a man riding a horse on the beach",
          "An UPPER case SENTENCE with Punctuation???", "emoji 🐶 and <b>tags</b>"]
CAPTIONS = CORPUS + [
    "", " ", "a", "A", "caté", "dog,cat;bird:fish", "((nested)) [brackets] {braces}",
    "numbers 1234567890 and 3.14159", "tabs\tand\nnewlines", "UPPER lower MiXeD",
    "a very long caption " + "that keeps going and going " * 12,
    "unknown words zyxwvut qqqq", "hyphen-ated and under_scored", "'quotes' and \"double\"",
]


def _train_tokenizer(kind: str, folder: str) -> str:
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer

    raw = folder + "_raw"
    os.makedirs(raw, exist_ok=True)
    corpus = CORPUS * 30
    if kind == "roberta":
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(raw)
        tok = transformers.RobertaTokenizerFast(vocab=os.path.join(raw, "vocab.json"),
                                                merges=os.path.join(raw, "merges.txt"))
    else:
        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(corpus, vocab_size=300, min_frequency=1)
        wp.save_model(raw)
        tok = transformers.BertTokenizerFast(vocab=os.path.join(raw, "vocab.txt"))
    tok.save_pretrained(folder)
    return raw


def _randomize(model, seed):
    """Non-trivial LayerNorms and biases too, so a mis-mapped norm cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(2.9)
            elif "LayerNorm.weight" in name or "layer_norm" in name and name.endswith("weight") \
                    or "layrnorm.weight" in name or "layernorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _hf_dual(kind: str, tok_folder: str, seed: int = 0, vocab: int = 400):
    torch.manual_seed(seed)
    vision = transformers.CLIPVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=32, patch_size=8,
                                           hidden_act="quick_gelu")
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    if kind == "roberta":
        text = transformers.RobertaConfig(max_position_embeddings=42, pad_token_id=1, type_vocab_size=1,
                                          layer_norm_eps=1e-5, **common)
    else:
        text = transformers.BertConfig(max_position_embeddings=40, pad_token_id=0, **common)
    config = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(vision, text,
                                                                               projection_dim=24)
    return _randomize(transformers.VisionTextDualEncoderModel(config), seed)


@pytest.fixture(scope="module", params=["roberta", "bert"])
def converted(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    hf_dir = str(root / "hf")
    _train_tokenizer(kind, hf_dir)
    hf = _hf_dual(kind, hf_dir, vocab=transformers.AutoTokenizer.from_pretrained(hf_dir).vocab_size)
    hf.save_pretrained(hf_dir)
    out = str(root / "ms")
    assert convert_cli(["--torch_path", hf_dir, "--mindspore_path", out]) == 0
    return kind, hf, hf_dir, out, root


def _pixels(n=4, size=32, seed=3):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_tokenizer_ids_equal_autotokenizer(converted):
    kind, _, hf_dir, out, root = converted
    ours = mindclip.get_tokenizer(out)
    ref = transformers.AutoTokenizer.from_pretrained(hf_dir)
    length = ours.max_length
    assert length == (40 if kind == "roberta" else 40)  # max positions minus RoBERTa's offset
    theirs = ref(CAPTIONS, max_length=length, padding="max_length", truncation=True)
    got = ours(CAPTIONS)
    assert got["input_ids"].dtype == np.int32 and got["input_ids"].shape == (len(CAPTIONS), length)
    np.testing.assert_array_equal(got["input_ids"], np.array(theirs["input_ids"]))
    np.testing.assert_array_equal(got["attention_mask"], np.array(theirs["attention_mask"]))
    assert got["attention_mask"][CAPTIONS.index(CAPTIONS[20])].all()  # the long one is truncated
    # the older folder layouts (vocab.json + merges.txt, or vocab.txt) give the same ids
    legacy = str(root / "legacy")
    shutil.copytree(str(hf_dir) + "_raw", legacy)
    shutil.copy(os.path.join(hf_dir, "tokenizer_config.json"), legacy)
    np.testing.assert_array_equal(mindclip.tokenizer.HFTokenizer(legacy, length)(CAPTIONS)["input_ids"],
                                  np.array(theirs["input_ids"]))


def test_features_and_loss_equal_transformers(converted):
    kind, hf, hf_dir, out, _ = converted
    model = mindclip.create_model(pretrained=out)
    assert model.family == "dual_encoder"
    tok = mindclip.get_tokenizer(model)
    batch = tok(CAPTIONS[:4])
    pixels = _pixels()
    with torch.no_grad():
        ids, mask = torch.tensor(batch["input_ids"]).long(), torch.tensor(batch["attention_mask"]).long()
        img_ref = hf.get_image_features(pixel_values=pixels)
        txt_ref = hf.get_text_features(input_ids=ids, attention_mask=mask)
        img_ref = getattr(img_ref, "pooler_output", img_ref).numpy()
        txt_ref = getattr(txt_ref, "pooler_output", txt_ref).numpy()
        loss_ref = float(hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss)
    img = model.encode_image(ms.Tensor(pixels.numpy())).asnumpy()
    txt = model.encode_text(ms.Tensor(batch["input_ids"]), ms.Tensor(batch["attention_mask"])).asnumpy()
    assert np.abs(img - img_ref).max() <= FEATURE_ATOL
    assert np.abs(txt - txt_ref).max() <= FEATURE_ATOL
    objective = ContrastiveObjective(model, ClipLoss(rank=0, world_size=1), "clip", None)
    loss, _ = objective(ms.Tensor(pixels.numpy()), ms.Tensor(batch["input_ids"]),
                        ms.Tensor(batch["attention_mask"]))
    assert abs(float(loss.asnumpy()) - loss_ref) <= 1e-4 * max(1.0, abs(loss_ref))


def test_reverse_conversion_loads_into_transformers(converted):
    kind, hf, hf_dir, out, root = converted
    back = str(root / "back")
    assert convert_cli(["--reverse", "--mindspore_path", out, "--torch_path", back]) == 0
    reloaded = transformers.VisionTextDualEncoderModel.from_pretrained(back).eval()
    ref_state = hf.state_dict()
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    tok = transformers.AutoTokenizer.from_pretrained(back)
    batch = tok(CAPTIONS[:3], max_length=40, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        a = hf(**batch, pixel_values=_pixels(3)).logits_per_image
        b = reloaded(**batch, pixel_values=_pixels(3)).logits_per_image
    assert torch.equal(a, b)


def test_assembly_equals_from_vision_text_pretrained(tmp_path):
    """run_clip.py's starting point from a HF CLIP folder and a HF RoBERTa folder: the towers
    equal HF's from_vision_text_pretrained; the new projections are fresh."""
    tok_dir = str(tmp_path / "roberta")
    _train_tokenizer("roberta", tok_dir)
    torch.manual_seed(1)
    clip_cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=500, max_position_embeddings=20),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)
    clip_dir = str(tmp_path / "clip")
    _randomize(transformers.CLIPModel(clip_cfg), 2).save_pretrained(clip_dir)
    text_cfg = transformers.RobertaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, max_position_embeddings=42, layer_norm_eps=1e-5)
    _randomize(transformers.RobertaModel(text_cfg), 3).save_pretrained(tok_dir)
    out = str(tmp_path / "assembled")
    assert convert_cli(["--vision_path", clip_dir, "--text_path", tok_dir, "--mindspore_path", out,
                        "--projection_dim", "24"]) == 0
    ref = transformers.VisionTextDualEncoderModel.from_vision_text_pretrained(clip_dir, tok_dir,
                                                                              projection_dim=24).eval()
    model = mindclip.create_model(pretrained=out)
    assert mindclip.get_tokenizer(model)(["a cat"])["input_ids"].shape == (1, 40)
    pixels = _pixels(2)
    with torch.no_grad():
        pooled_img = ref.vision_model(pixel_values=pixels).pooler_output.numpy()
        batch = transformers.AutoTokenizer.from_pretrained(tok_dir)(
            CAPTIONS[:2], max_length=40, padding="max_length", truncation=True, return_tensors="pt")
        pooled_txt = ref.text_model(**batch).pooler_output.numpy()
    # towers: pooled outputs before the (new) projections
    ours_img = model.visual.ln_post(model.visual.transformer(model.visual.ln_pre(
        _vit_tokens(model, pixels.numpy())))[:, 0, :]).asnumpy()
    ours_txt = model.text(ms.Tensor(batch["input_ids"].numpy().astype(np.int32)),
                          ms.Tensor(batch["attention_mask"].numpy().astype(np.int32))).asnumpy()
    assert np.abs(ours_img - pooled_img).max() <= FEATURE_ATOL
    assert np.abs(ours_txt - pooled_txt).max() <= FEATURE_ATOL
    # projections are new (not CLIP's), drawn as HF draws them; logit scale at HF's init
    proj = model.visual.proj.asnumpy()
    assert proj.shape == (48, 24) and 0.01 < proj.std() < 0.03
    assert abs(float(model.logit_scale.asnumpy()) - 2.6592) < 1e-6


def _vit_tokens(model, pixels):
    """The ViT's input sequence (patches + class token + positions), as its construct builds it."""
    visual = model.visual
    x = visual.conv1(ms.Tensor(pixels))  # (B, patches, width)
    b = x.shape[0]
    cls = ms.ops.broadcast_to(visual.class_embedding.reshape(1, 1, -1), (b, 1, visual.width))
    return ms.ops.concat((cls, x), axis=1) + visual.positional_embedding


def test_full_size_clip_b32_roberta_base(tmp_path):
    """CLIP ViT-B/32 vision + a roberta-base-sized text tower (random init), converted in
    memory, features within 1e-4 of transformers'."""
    from mindclip.convert.dual_encoder import _split_dual_state, config_from_hf
    from mindclip.families.base import get_family

    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=224, patch_size=32)
    text = transformers.RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                                      num_attention_heads=12, intermediate_size=3072,
                                      max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                                      pad_token_id=1)
    hf = transformers.VisionTextDualEncoderModel(
        transformers.VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=512)).eval()
    config = config_from_hf(hf.config.to_dict())
    tensors = _split_dual_state({k: v.numpy() for k, v in hf.state_dict().items()})
    model = get_family("dual_encoder").build_model(config, initialize=False)
    for k, p in model.parameters_dict().items():
        p.set_data(ms.Tensor(tensors[k]))
    model.set_train(False)
    gen = np.random.default_rng(0)
    ids = gen.integers(3, 50265, (2, 128)).astype(np.int32)
    ids[:, 0], ids[0, 60:], ids[0, 59] = 0, 1, 2
    mask = (ids != 1).astype(np.int32)
    pixels = _pixels(2, 224)
    with torch.no_grad():
        img_ref = hf.get_image_features(pixel_values=pixels)
        txt_ref = hf.get_text_features(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    img = model.encode_image(ms.Tensor(pixels.numpy())).asnumpy()
    txt = model.encode_text(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    assert np.abs(img - getattr(img_ref, "pooler_output", img_ref).numpy()).max() <= FEATURE_ATOL
    assert np.abs(txt - getattr(txt_ref, "pooler_output", txt_ref).numpy()).max() <= FEATURE_ATOL


def _coco_fixture(root, n=24):
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "train2017"))
    os.makedirs(os.path.join(root, "annotations"))
    images, annotations = [], []
    for i in range(n):
        color = rng.integers(0, 255, 3)
        arr = np.clip(rng.normal(color, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(os.path.join(root, "train2017", f"{i:012d}.jpg"))
        images.append({"id": i, "file_name": f"{i:012d}.jpg"})
        for j in range(2):
            annotations.append({"id": 2 * i + j, "image_id": i, "caption": f"{CORPUS[i % 10]} number {j}"})
    with open(os.path.join(root, "annotations", "captions_train2017.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations}, f)
    return str(root)


def test_finetune_on_coco_fixture_resumes_and_freezes(converted, tmp_path):
    kind, _, _, out, _ = converted
    coco = _coco_fixture(tmp_path / "coco")
    config = os.path.join(ROOT, "configs", "dual_encoder", "run_clip_roberta_finetune_coco.yaml")
    args = ["--config", config, "--run_mode", "finetune", "--model.pretrained", out,
            "--train_dataset_dir", coco, "--runner.batch_size", "8", "--runner.epochs", "2",
            "--runner.save_interval", "2", "--runner.keep_checkpoints", "0", "--runner.log_interval", "1",
            "--runner.progress_bar", "false", "--runner.lock_image", "true",
            "--eval_dataset.type", "null", "--optimizer.lr", "5e-4"]
    full = str(tmp_path / "full")
    before = {k: p.asnumpy().copy() for k, p in mindclip.create_model(pretrained=out).parameters_dict().items()}
    assert run_mindformer.main(args + ["--output_dir", full]) == 0
    losses = [r["loss"] for r in read_metrics(os.path.join(full, "metrics.jsonl"), "train")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    trained = mindclip.create_model(pretrained=os.path.join(full, "mindclip_model.safetensors"))
    after = {k: p.asnumpy() for k, p in trained.parameters_dict().items()}
    for k in before:  # the frozen vision model is bit-identical; its projection trained
        if k.startswith("visual.") and k != "visual.proj":
            np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert not np.array_equal(before["visual.proj"], after["visual.proj"])
    assert not np.array_equal(before["text_projection.weight"], after["text_projection.weight"])
    # resume from step 2 reproduces steps 3..6
    resumed = str(tmp_path / "resumed")
    os.makedirs(os.path.join(resumed, "checkpoints"))
    shutil.copy(os.path.join(full, "checkpoints", "step_00000002.ckpt"), os.path.join(resumed, "checkpoints"))
    with open(os.path.join(resumed, "checkpoints", "latest"), "w") as f:
        f.write("step_00000002.ckpt\n")
    assert run_mindformer.main(args + ["--output_dir", resumed, "--resume"]) == 0
    again = read_metrics(os.path.join(resumed, "metrics.jsonl"), "train")
    assert [r["step"] for r in again] == [3, 4, 5, 6]
    for r in again:
        assert abs(r["loss"] - losses[r["step"] - 1]) <= 1e-6

    # retrieval evaluation, a pipeline and MindIR export work on the fine-tuned folder unchanged
    ev = str(tmp_path / "eval")
    assert run_mindformer.main(["--config", config, "--run_mode", "eval", "--model.pretrained", full,
                                "--eval_dataset.type", "coco", "--eval_dataset.path", coco,
                                "--eval_dataset.split", "train", "--output_dir", ev]) == 0
    with open(os.path.join(ev, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["task"] == "image_text_retrieval" and metrics["num_images"] == 24
    search = mindclip.pipeline("image_text_retrieval", model=full, images=os.path.join(coco, "train2017"))
    hits = search(CORPUS[3] + " number 0", top_k=3)
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from export import export_encoders

    image_path, text_path = export_encoders(trained, str(tmp_path / "mindir"), "clip_roberta")
    text_cell = ms.nn.GraphCell(ms.load(text_path))
    batch = mindclip.get_tokenizer(trained)(CAPTIONS[:3])
    exported = text_cell(ms.Tensor(batch["input_ids"]), ms.Tensor(batch["attention_mask"])).asnumpy()
    direct = trained.encode_text(ms.Tensor(batch["input_ids"]), ms.Tensor(batch["attention_mask"])).asnumpy()
    assert np.abs(exported - direct).max() <= 1e-5


def test_linear_schedule_equals_hugging_face_trainer():
    """run_clip.py's schedule (no warmup, linear decay) as transformers computes it."""
    from mindclip.training.lr import linear_schedule

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=5e-5)
    sched = transformers.get_linear_schedule_with_warmup(opt, 0, 20)
    theirs = []
    for _ in range(20):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(linear_schedule(5e-5, 20, 0), theirs, rtol=1e-6, atol=0)


def test_digits_demo_short_run(tmp_path):
    """The dual-encoder demo, shortened (12 of 40 epochs): init tool (a WordPiece vocabulary
    trained on the digits captions) + the demo config; zero-shot far above chance (10 %)."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import init_dual_encoder

    init = str(tmp_path / "init")
    assert init_dual_encoder.main(["--output", init]) == 0
    assert mindclip.get_tokenizer(init)(["a photo of the number seven."])["input_ids"].shape == (1, 16)
    out = str(tmp_path / "demo")
    config = os.path.join(ROOT, "configs", "demo", "run_dual_encoder_tiny_digits.yaml")
    assert run_mindformer.main(["--config", config, "--model.pretrained", init, "--output_dir", out,
                                "--runner.epochs", "12", "--runner.progress_bar", "false",
                                "--runner.eval_interval", "0"]) == 0
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_samples"] == 355 and metrics["top1"] >= DEMO_MIN_TOP1, metrics["top1"]
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))  # the model folder is complete
    assert mindclip.create_model(pretrained=out).family == "dual_encoder"


# Measured 28 % at 12 epochs (the full 40-epoch demo: 88 %); chance is 10 % and one binomial
# standard deviation on 355 images about 1.6 points, so 20 % cannot be reached by chance.
DEMO_MIN_TOP1 = 20.0
