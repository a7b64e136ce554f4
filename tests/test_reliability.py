"""Runs that survive what clusters do to them: damaged checkpoints are detected and passed
over, SIGTERM checkpoints and asks to be requeued, a failing disk leaves the previous state
intact. Every resumed run must log steps 1..30 once, with the uninterrupted run's values."""
import errno
import os
import shutil
import signal
import time

import pytest

import run_mindformer
from mindclip.errors import REQUEUE_EXIT_STATUS
from mindclip.training.logger import read_metrics
from test_training_runs import RESUME_ARGS, _run_cli, kill_and_resume, uninterrupted_run


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted 30-step run (a checkpoint every 4 steps, the last 3 kept), shared."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    return out, uninterrupted_run(out, RESUME_ARGS)


def test_killed_run_resumes_exactly(reference_run, tmp_path):
    reference, records = kill_and_resume(tmp_path, RESUME_ARGS, reference_run[1])
    losses = {r["step"]: r["loss"] for r in reference}
    for r in records:
        assert abs(r["loss"] - losses[r["step"]]) <= 1e-6, (r["step"], r["loss"], losses[r["step"]])


def assert_log_equals(out, reference):
    records = read_metrics(os.path.join(out, "metrics.jsonl"), "train")
    assert [r["step"] for r in records] == list(range(1, 31))
    for mine, ref in zip(records, reference):
        assert abs(mine["loss"] - ref["loss"]) <= 1e-6, (mine["step"], mine["loss"], ref["loss"])


def _resume(out):
    proc = _run_cli(RESUME_ARGS + ["--output_dir", out, "--resume"])
    output = proc.communicate(timeout=600)[0].decode()
    return proc.returncode, output


def test_damaged_checkpoints_are_skipped_and_resume_is_exact(reference_run, tmp_path):
    """The newest checkpoint truncated (a crash mid-copy), the one before it with one flipped
    byte inside a tensor (it still parses): resume takes the one before those two."""
    ref_dir, reference = reference_run
    out = str(tmp_path / "run")
    shutil.copytree(ref_dir, out)
    ckpts = os.path.join(out, "checkpoints")
    assert sorted(f for f in os.listdir(ckpts) if f.startswith("step_")) == [
        "step_00000024.ckpt", "step_00000028.ckpt", "step_00000030.ckpt"]
    newest = os.path.join(ckpts, "step_00000030.ckpt")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    flipped = os.path.join(ckpts, "step_00000028.ckpt")
    data = bytearray(open(flipped, "rb").read())
    data[len(data) // 2] ^= 0x04
    open(flipped, "wb").write(bytes(data))

    code, output = _resume(out)
    assert code == 0, output[-3000:]
    assert "skipped step_00000030.ckpt: cannot read MindSpore checkpoint" in output
    assert "skipped step_00000028.ckpt:" in output and "do not match the checksum" in output
    assert "resumed from step 24" in output
    assert_log_equals(out, reference)


def test_no_intact_checkpoint_is_an_error_naming_the_files(reference_run, tmp_path):
    ref_dir, _ = reference_run
    out = str(tmp_path / "run")
    shutil.copytree(ref_dir, out)
    ckpts = os.path.join(out, "checkpoints")
    for name in os.listdir(ckpts):
        if name.startswith("step_"):
            with open(os.path.join(ckpts, name), "r+b") as f:
                f.truncate(100)
    code, output = _resume(out)
    assert code == 2
    line = [x for x in output.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "no intact checkpoint" in line[0]
    for step in (24, 28, 30):
        assert f"step_{step:08d}.ckpt" in line[0]


def test_sigterm_checkpoints_exits_for_requeue_and_resumes_exactly(reference_run, tmp_path):
    _, reference = reference_run
    out = str(tmp_path / "run")
    proc = _run_cli(RESUME_ARGS + ["--output_dir", out])
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(metrics) and len(read_metrics(metrics, "train")) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == REQUEUE_EXIT_STATUS, output[-3000:]
    stopped = int(output.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert 6 <= stopped < 30
    assert f"stopped by SIGTERM at step {stopped}; resume with --resume" in output
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        assert f.read().strip() == f"step_{stopped:08d}.ckpt"
    assert [r["step"] for r in read_metrics(metrics, "train")] == list(range(1, stopped + 1))

    code, output = _resume(out)
    assert code == 0, output[-3000:]
    assert f"resumed from step {stopped}" in output
    assert_log_equals(out, reference)


def test_full_disk_on_save_keeps_the_previous_state(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the step-8 checkpoint: one error line naming the path and the free
    space; step 4's checkpoint, ``latest`` and nothing half-written remain."""
    import mindclip.training.checkpoint as checkpoint

    real_write = checkpoint.write_ckpt

    def failing_write(path, *args, **kwargs):
        if path.endswith("step_00000008.ckpt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "write_ckpt", failing_write)
    out = str(tmp_path / "run")
    assert run_mindformer.main(RESUME_ARGS + ["--output_dir", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write ")
    assert "step_00000008.ckpt: No space left on device" in err[0] and "GB free on" in err[0]
    ckpts = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["latest", "step_00000004.ckpt"]
    with open(os.path.join(ckpts, "latest")) as f:
        assert f.read().strip() == "step_00000004.ckpt"
    assert not os.path.exists(os.path.join(out, "mindclip_model.safetensors"))


def _caption_files(root, n=24, broken_lines=(), missing_images=()):
    """``n`` PNGs with JSON-lines captions (run_clip.py's layout); some lines broken, some
    rows pointing at images that do not exist."""
    import json

    import numpy as np
    from PIL import Image

    lines = []
    for i in range(n):
        name = f"img{i}.png"
        if i not in missing_images:
            Image.fromarray(np.full((40, 40, 3), i * 9 % 255, np.uint8)).save(root / name)
        lines.append("{not json" if i in broken_lines else json.dumps({"image_path": name, "caption": f"number {i}"}))
    (root / "train.json").write_text("\n".join(lines) + "\n")
    return str(root / "train.json")


def _trainer(out, path, **dataset):
    from mindclip.config import load_config
    from mindclip.trainer import Trainer

    cfg = load_config(None, {"output_dir": str(out), "model.name": "ViT-Tiny-8",
                             "train_dataset.type": "jsonl", "train_dataset.path": path,
                             "train_dataset.num_workers": 1, "runner.batch_size": 4,
                             "runner.progress_bar": False,
                             **{f"train_dataset.{k}": v for k, v in dataset.items()}})
    return Trainer(config=cfg)


def test_caption_lines_that_do_not_parse_are_named_counted_and_skipped(tmp_path):
    path = _caption_files(tmp_path, n=24, broken_lines=(5,))
    out = tmp_path / "run"
    summary = _trainer(out, path, max_skip_fraction=0.05).train()
    assert summary["global_step"] == 23 // 4
    records = read_metrics(str(out / "metrics.jsonl"), "dataset")
    assert records == [{"type": "dataset", "invalid_records": 1,
                        "invalid": [f"{path}:6: expected {{\"image_path\": \"x.jpg\", \"caption\": \"...\"}} per line"]}]
    with pytest.raises(ValueError, match=r"1 of 24 records cannot be read \(more than max_skip_fraction 0.01\)"):
        _trainer(tmp_path / "strict", path, max_skip_fraction=0.01).train()


def test_unreadable_images_beyond_the_bound_stop_the_run(tmp_path):
    path = _caption_files(tmp_path, n=24, missing_images=(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"epoch 0: 4 of 24 training images could not be read "
                                         r"\(more than train_dataset.max_skip_fraction 0.05\): .*img1.png"):
        _trainer(tmp_path / "run", path).train()
    summary = _trainer(tmp_path / "lenient", path, max_skip_fraction=0.2).train()
    assert summary["skipped_images"] == 4 and summary["global_step"] == 5


def test_missing_webdataset_shard_is_named_and_skipped(tmp_path):
    from test_data import write_shards

    from mindclip.data.loader import build_source

    pattern = write_shards(tmp_path)  # shards 00000..00002
    wider = pattern.replace("00002", "00003")
    with pytest.raises(ValueError, match=r"1 of 4 records cannot be read .*shard-00003.tar: shard not found"):
        build_source({"type": "webdataset", "path": wider, "train_num_samples": 12})
    src = build_source({"type": "webdataset", "path": wider, "train_num_samples": 12,
                        "max_skip_fraction": 0.5})
    assert len(src.shards) == 3 and src.invalid == [f"{tmp_path}/shard-00003.tar: shard not found"]
