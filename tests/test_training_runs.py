"""End-to-end training behaviour: the demo learns, killed runs resume exactly, data-parallel
equals single-process, bad config keys fail clearly, fp16 and tower locking work."""
import gc
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import mindspore as ms
from conftest import ROOT

import run_mindformer
from mindclip.training.logger import read_metrics
from mindclip.training.optim import AdamW

DEMO = os.path.join(ROOT, "configs", "demo", "run_clip_tiny_digits.yaml")


def test_demo_learns_digits_short_run(tmp_path):
    """A shortened demo (8 of 40 epochs): the loss falls and zero-shot / retrieval are far
    above chance (10 %) on held-out digits; every promised output file is written. The eval
    after the last epoch and the final evaluation, which runs after the train step and the
    optimizer state are given back, see the same weights: same metrics. Nothing of the train
    step outlives the run (MindSpore keeps the step Cell itself alive)."""
    out = str(tmp_path / "demo")
    optimizers = _alive(AdamW)
    code = run_mindformer.main(["--config", DEMO, "--output_dir", out, "--runner.epochs", "8",
                                "--runner.progress_bar", "false", "--runner.eval_interval", "8"])
    assert code == 0
    losses = [r["loss"] for r in read_metrics(os.path.join(out, "metrics.jsonl"), "train")]
    assert len(losses) == 8 * (1442 // 64)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_samples"] == 355 and metrics["skipped_images"] == 0
    assert metrics["top1"] >= 80.0
    assert metrics["retrieval"]["text_to_image_R@1"] >= 50.0  # chance: 10 %
    last = read_metrics(os.path.join(out, "metrics.jsonl"), "eval")[-1]
    assert last["epoch"] == 8 and last["top1"] == metrics["top1"] and last["retrieval"] == metrics["retrieval"]
    for name in ("training_curves.png", "per_class_accuracy.png", "mindclip_model.safetensors",
                 "checkpoints/latest"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert _alive(AdamW) == optimizers, "the run's AdamW moments outlive it"


def _alive(kind):
    gc.collect()
    return sum(type(o) is kind for o in gc.get_objects())


def _run_cli(args, **kwargs):
    # one kernel thread, as in the test processes (conftest): two pytest workers share two cores
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "run_mindformer.py"), *args,
                             "--context.threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, **kwargs)


RESUME_ARGS = ["--config", DEMO, "--train_dataset.num_samples", "320", "--runner.batch_size", "32",
               "--runner.epochs", "3", "--runner.save_interval", "4", "--runner.log_interval", "1",
               "--runner.progress_bar", "false", "--eval_dataset.type", "null",
               "--eval.retrieval_dataset.type", "null"]


def uninterrupted_run(out, args, steps=30):
    """The training records of ``args`` (``steps`` steps) run to the end into ``out``."""
    proc = _run_cli(args + ["--output_dir", str(out)])
    assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()[-3000:]
    reference = read_metrics(os.path.join(str(out), "metrics.jsonl"), "train")
    assert [r["step"] for r in reference] == list(range(1, steps + 1))
    return reference


def kill_and_resume(tmp_path, args, reference=None, steps=30):
    """Run ``args`` (``steps`` steps, a checkpoint every 4) to the end (unless its
    ``reference`` records are given); run it again, kill -9 it after its checkpoint at step 8
    or later, resume it. Returns the uninterrupted run's training records and the resumed
    run's whole log, which must hold each step exactly once wherever the kill landed (records
    the killed run wrote past its checkpoint are dropped)."""
    killed = str(tmp_path / "killed")
    if reference is None:
        reference = uninterrupted_run(tmp_path / "full", args, steps)

    proc = _run_cli(args + ["--output_dir", killed])
    latest = os.path.join(killed, "checkpoints", "latest")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(latest) and open(latest).read().strip() >= "step_00000008.ckpt":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(latest) as f:
        resumed_from = int(f.read().strip()[5:13])
    assert 8 <= resumed_from < steps, "the run finished before it could be killed"

    proc = _run_cli(args + ["--output_dir", killed, "--resume"])
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert f"resumed from step {resumed_from}" in output
    records = read_metrics(os.path.join(killed, "metrics.jsonl"), "train")
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    return reference, records


def test_wrong_config_key_fails_with_valid_keys(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base_config: {DEMO}\nrunner:\n  epoch: 3\n")
    assert run_mindformer.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'runner.epoch'" in err and "'epochs'" in err
    assert run_mindformer.main(["--config", DEMO, "--optimizer.learning_rate", "1"]) == 2
    assert "valid keys at optimizer: ['beta1', 'beta2', 'eps', 'lr', 'type', 'weight_decay']" in \
        capsys.readouterr().err


def msrun_two_ranks(log_dir, worker: str, *args: str) -> None:
    """Run ``worker args`` as 2 ranks under msrun; a failure shows the ranks' log tails."""
    msrun = os.path.join(os.path.dirname(sys.executable), "msrun")
    port = 20000 + (os.getpid() * 7 + len(str(log_dir))) % 10000
    proc = subprocess.run([msrun, "--worker_num", "2", "--local_worker_num", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), "--log_dir", str(log_dir),
                           "--join", "True", worker, *args], cwd=ROOT, timeout=600,
                          # msrun starts workers with the `python` found on PATH
                          env=dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                                   + os.environ.get("PATH", "")),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    logs = "".join(open(os.path.join(log_dir, f)).read()[-2000:] for f in sorted(os.listdir(log_dir)))
    assert proc.returncode == 0, logs


def test_accumulation_under_two_ranks_equals_whole_batch_steps(tmp_path):
    """CoCa and DeCLIP under msrun, 2 ranks: two data-parallel steps with 2 micro-batches per
    rank give each rank the losses, weights and state (DeCLIP's memory and BatchNorm
    statistics) of two steps on its whole batch."""
    msrun_two_ranks(tmp_path / "logs", os.path.join(ROOT, "tests", "accumulation_dp_worker.py"), str(tmp_path))
    for family in ("coca", "declip"):
        for rank in (0, 1):
            whole, accumulated = (np.load(tmp_path / f"{family}_rank{rank}_accum{a}.npz") for a in (1, 2))
            # every term within 1e-5 of the largest (fp32 sums of terms near 10: a DeCLIP term
            # near 0, -0.0126, differs by 1 ulp of the total, 1e-5 relative to itself)
            scale = 1e-5 * max(1.0, float(np.abs(whole["losses"]).max()))
            assert np.abs(accumulated["losses"] - whole["losses"]).max() <= scale, (family, rank)
            assert len(whole.files) > 20 and abs(whole["losses"][1][0] - whole["losses"][0][0]) > 1e-3  # it learnt
            for name in whole.files:
                # weights within 1e-6; BatchNorm statistics (batch variances of features computed
                # at another batch shape) within 1e-5 relative
                tolerance = (1e-5 if "moving" in name else 1e-6) * max(1.0, float(np.abs(whole[name]).max()))
                assert np.abs(accumulated[name] - whole[name]).max() <= tolerance, (family, rank, name)


def test_data_parallel_msrun_equals_single_process(tmp_path):
    worker = os.path.join(ROOT, "tests", "dp_worker.py")
    single = tmp_path / "single"
    single.mkdir()
    subprocess.run([sys.executable, worker, str(single), "16"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dp = tmp_path / "dp"
    dp.mkdir()
    msrun_two_ranks(tmp_path / "logs", worker, str(dp), "8")
    ref = np.load(single / "params_rank0_of1.npz")
    ranks = [np.load(dp / f"params_rank{r}_of2.npz") for r in (0, 1)]
    for k in ref.files:
        np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=k)
        assert np.abs(ranks[0][k] - ref[k]).max() <= 1e-5, k
    # the run really trained: parameters differ from a fresh model with the same seed
    from mindclip import create_model

    ms.set_seed(3)
    fresh = {k: p.asnumpy() for k, p in create_model("ViT-Tiny-8").parameters_dict().items()}
    assert max(float(np.abs(fresh[k] - ref[k]).max()) for k in ref.files) > 1e-6


def _tiny_runner(tmp_path, **runner):
    from mindclip.config import load_config
    from mindclip.trainer import Trainer

    cfg = load_config(None, {"output_dir": str(tmp_path), "model.name": "ViT-Tiny-8",
                             "train_dataset.type": "digits_captions", "train_dataset.num_samples": 32,
                             "runner.batch_size": 16, "runner.progress_bar": False,
                             **{f"runner.{k}": v for k, v in runner.items()}})
    return Trainer(config=cfg)


def test_a_run_ending_on_its_save_interval_checkpoints_once(tmp_path, monkeypatch):
    """The last step falls on save_interval, mid-epoch: that checkpoint is the run's last
    state, written once (not again as the run's final save); a resume from it has nothing
    left to do, and nothing to write."""
    from mindclip.training import runner

    written = []
    save = runner.save_training_checkpoint
    monkeypatch.setattr(runner, "save_training_checkpoint",
                        lambda out, params, state, **kw: written.append(state) or save(out, params, state, **kw))
    summary = _tiny_runner(tmp_path, epochs=2, max_steps=3, save_interval=3).train()
    assert summary["global_step"] == 3
    assert [(s["global_step"], s["epoch"], s["batch_in_epoch"]) for s in written] == [(3, 1, 1)]
    with open(tmp_path / "checkpoints" / "latest") as f:
        assert f.read().strip() == "step_00000003.ckpt"
    trainer = _tiny_runner(tmp_path, epochs=2, max_steps=3, save_interval=3)
    trainer.config["resume"] = True
    assert trainer.train()["global_step"] == 3 and len(written) == 1  # nor does its resume write it again


def test_lock_image_tower_keeps_it_fixed(tmp_path):
    trainer = _tiny_runner(tmp_path, lock_image=True, lock_image_unlocked_groups=1)
    before = {k: p.asnumpy().copy() for k, p in trainer.model.parameters_dict().items()}
    trainer.train()
    after = {k: p.asnumpy() for k, p in trainer.model.parameters_dict().items()}
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert "visual.conv1.weight" not in changed and "visual.transformer.resblocks.0.attn.in_proj.weight" not in changed
    assert "visual.proj" in changed and "visual.ln_post.gamma" in changed  # the unlocked last group
    assert "text.text_projection" in changed


def test_fp16_training_runs_close_to_fp32(tmp_path):
    losses = {}
    for precision in ("fp32", "fp16"):
        trainer = _tiny_runner(tmp_path / precision, precision=precision, epochs=1)
        summary = trainer.train()
        losses[precision] = summary["final_loss"]
    assert np.isfinite(losses["fp16"]) and abs(losses["fp16"] - losses["fp32"]) < 0.05


def test_resume_purges_the_records_past_its_checkpoint(tmp_path):
    """A run killed after logging step 11 (checkpoint at step 8, mid-epoch 1 of 5-step
    epochs) and after epoch 1's evaluation: resuming at step 8 keeps steps 1..8, epoch 0's
    record and the evaluation after epoch 1, and nothing the resumed run writes again."""
    from mindclip.training.logger import MetricsLogger

    log = MetricsLogger(str(tmp_path), progress_bar=False)
    for step in range(1, 12):
        log.write({"type": "train", "step": step, "epoch": (step - 1) // 5, "loss": float(step)})
        if step % 5 == 0:
            log.write({"type": "epoch", "epoch": step // 5 - 1, "skipped_images": 0})
            log.write({"type": "eval", "epoch": step // 5, "step": step, "top1": 1.0})
    assert log.purge_after(8, 1) == 3 + 1 + 1
    records = read_metrics(log.path)
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(1, 9))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0]
    assert [r["epoch"] for r in records if r["type"] == "eval"] == [1]
    assert log.purge_after(8, 1) == 0
