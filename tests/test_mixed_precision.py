"""Mixed precision: fp16 with a dynamic loss scale skips non-finite steps exactly (nothing
moves), shrinks and regrows the scale, resumes exactly after kill -9; unsupported
backend/precision pairs are refused at start-up in one line."""
import os
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import run_mindformer
from conftest import ROOT
from mindclip import get_tokenizer
from mindclip.config import load_config
from mindclip.trainer import Trainer
from mindclip.training.precision import resolve_precision
from mindclip.training.runner import TrainingRunner
from test_training_runs import DEMO, RESUME_ARGS, kill_and_resume


def _fp16_runner(tmp_path, family="clip", **runner):
    model = {"model.name": "ViT-Tiny-8"}
    if family == "dual_encoder":  # a tiny CLIP-ViT + BERT folder from the init tool
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        import init_dual_encoder

        init = str(tmp_path / "init")
        assert init_dual_encoder.main(["--output", init]) == 0
        model = {"model.name": None, "model.pretrained": init}
    cfg = load_config(None, {"output_dir": str(tmp_path / "run"), **model,
                             "train_dataset.type": "digits_captions", "train_dataset.num_samples": 32,
                             "runner.batch_size": 8, "runner.progress_bar": False,
                             "runner.precision": "fp16", "optimizer.lr": 1e-3,
                             **{f"runner.{k}": v for k, v in runner.items()}})
    ms.set_seed(0)
    trainer = Trainer(config=cfg)
    return TrainingRunner(trainer.config, trainer.model)


def _text_inputs(model, captions):
    out = get_tokenizer(model)(captions)
    return tuple(Tensor(v) for v in out.values()) if isinstance(out, dict) else (Tensor(out),)


def _snapshot(runner):
    return {p.name: p.asnumpy().copy() for p in runner.state_parameters()}


@pytest.mark.parametrize("family", ["clip", "dual_encoder"])
def test_dynamic_loss_scale_skips_non_finite_step_and_adapts(tmp_path, family):
    runner = _fp16_runner(tmp_path, family, loss_scale_init=1024.0, loss_scale_window=3)
    assert runner.model.family == family
    rng = np.random.default_rng(0)
    size = runner.model.image_size
    texts = _text_inputs(runner.model, [f"a photo of the digit {i}" for i in range(8)])

    def step(poison=False):
        images = rng.standard_normal((8, 3, size, size)).astype(np.float32)
        if poison:  # beyond fp16's range (65504): the fp16 patch embedding overflows
            images[3] = 1e6
        return runner.step_cell(Tensor(images), *texts)

    for _ in range(2):
        loss, *_ = step()
        assert np.isfinite(loss.asnumpy())
    state = runner.loss_scale.state()
    assert state == {"amp_scale": 1024.0, "amp_skipped_steps": 0, "amp_clean_steps": 2}
    before = _snapshot(runner)
    step(poison=True)
    after = _snapshot(runner)
    scale_state = {k for k in before if k.startswith("loss_scale")}
    assert len(before) - len(scale_state) > 3 * len(runner.optimizer.parameters)
    for name in before:  # weights, Adam moments, the step counter, logit_scale: bit-identical
        if name not in scale_state:
            assert np.array_equal(before[name], after[name]), name
    assert runner.optimizer.step.asnumpy() == 2
    assert runner.loss_scale.state() == {"amp_scale": 512.0, "amp_skipped_steps": 1,
                                         "amp_clean_steps": 0}
    # training continues; three clean steps in a row double the scale again
    for expected_clean in (1, 2):
        loss, *_ = step()
        assert np.isfinite(loss.asnumpy())
        assert runner.loss_scale.state()["amp_clean_steps"] == expected_clean
    moved = _snapshot(runner)
    assert sum(not np.array_equal(moved[k], after[k]) for k in after) > len(after) // 2
    step()
    assert runner.loss_scale.state() == {"amp_scale": 1024.0, "amp_skipped_steps": 1,
                                         "amp_clean_steps": 0}
    assert runner.optimizer.step.asnumpy() == 5


def test_static_loss_scale_skips_but_keeps_its_value(tmp_path):
    runner = _fp16_runner(tmp_path, loss_scale=128.0)
    size = runner.model.image_size
    texts = _text_inputs(runner.model, ["zero"] * 8)
    images = np.zeros((8, 3, size, size), np.float32)
    images[0] = 1e6
    before = _snapshot(runner)
    runner.step_cell(Tensor(images), *texts)
    after = _snapshot(runner)
    assert all(np.array_equal(before[k], after[k]) for k in before if not k.startswith("loss_scale"))
    assert runner.loss_scale.state() == {"amp_scale": 128.0, "amp_skipped_steps": 1,
                                         "amp_clean_steps": 0}


FP16_ARGS = ["--runner.precision", "fp16", "--runner.loss_scale_init", "1.0e+9",
             "--runner.loss_scale_window", "4"]


def test_fp16_dynamic_scale_killed_run_resumes_exactly(tmp_path):
    """From a scale of 1e9 the first steps overflow and are skipped (the run keeps going),
    then the scale grows every 4 clean steps; a killed and resumed run reproduces the loss,
    the scale and the skip count of the uninterrupted one at every step."""
    reference, records = kill_and_resume(tmp_path, RESUME_ARGS + FP16_ARGS)
    ref = {r["step"]: r for r in reference}
    assert ref[30]["amp_skipped_steps"] >= 3  # 1e9 / 2**3 is still far above fp16's range
    assert max(r["amp_scale"] for r in reference) > min(r["amp_scale"] for r in reference[5:])
    for r in records:
        for key in ("loss", "amp_scale", "amp_skipped_steps", "amp_clean_steps", "logit_scale"):
            assert r[key] == ref[r["step"]][key] or (np.isnan(r[key]) and np.isnan(ref[r["step"]][key])), \
                (r["step"], key, r[key], ref[r["step"]][key])


def test_bf16_on_cpu_is_refused_at_start_up(tmp_path, capsys):
    code = run_mindformer.main(["--config", DEMO, "--output_dir", str(tmp_path), "--runner.precision",
                                "bf16"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: runner.precision bf16 does not run on CPU")
    assert "Ascend: fp32, fp16, bf16" in err[0] and "CPU: fp32, fp16" in err[0]
    assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_precision_by_backend():
    recipe = {"Ascend": "bf16", "CPU": "fp32"}
    assert resolve_precision(recipe, "Ascend") == "bf16"
    assert resolve_precision(recipe, "CPU") == "fp32"
    assert resolve_precision(recipe, "GPU") == "fp32"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_precision({"NPU": "fp16"}, "CPU")
    with pytest.raises(ValueError, match="fp32, fp16 or bf16"):
        resolve_precision("fp8", "Ascend")
