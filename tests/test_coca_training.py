"""CoCa trains: the digits demo's objective (contrastive + captioning terms, both logged),
captioning metrics in its evaluation, captions from --run_mode predict, and a run killed
with SIGKILL resumes exactly."""
import json
import os

import numpy as np

import run_mindformer
from conftest import ROOT
from test_training_runs import kill_and_resume

DEMO = os.path.join(ROOT, "configs", "demo", "run_coca_tiny_digits.yaml")
# 30 steps of 8 captions (a checkpoint every 4); evaluated once, after (not in each of the 3 runs)
ARGS = ["--config", DEMO, "--train_dataset.num_samples", "80", "--runner.batch_size", "8",
        "--runner.epochs", "3", "--runner.save_interval", "4", "--runner.log_interval", "1",
        "--runner.progress_bar", "false", "--lr_schedule.warmup_steps", "5",
        "--eval_dataset.type", "null", "--eval.retrieval_dataset.type", "null"]
EVAL = ["--eval_dataset.num_samples", "64", "--eval.retrieval_dataset.num_samples", "64",
        "--eval.batch_size", "32"]


def test_coca_trains_evaluates_captions_predicts_and_resumes_exactly(tmp_path, capsys):
    reference, records = kill_and_resume(tmp_path, ARGS)
    losses = {r["step"]: r for r in reference}
    for r in records:
        for term in ("loss", "loss_contrastive", "loss_caption"):
            assert abs(r[term] - losses[r["step"]][term]) <= 1e-6, (r["step"], term)
    assert all(abs(r["loss"] - r["loss_contrastive"] - r["loss_caption"]) < 1e-4 for r in reference)
    captions = [r["loss_caption"] for r in reference]
    assert np.mean(captions[-5:]) < np.mean(captions[:5]) - 2.0  # the decoder learns the words

    full = str(tmp_path / "full")
    assert run_mindformer.main(["--config", DEMO, "--run_mode", "eval", "--load_checkpoint", full,
                                "--output_dir", full] + EVAL) == 0
    with open(os.path.join(full, "eval_metrics.json")) as f:
        metrics = json.load(f)
    scores = metrics["retrieval"]["captioning"] if "captioning" in metrics["retrieval"] else metrics["captioning"]
    assert {"BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L"} <= set(scores) and scores["num_images"] == 64
    assert all(0.0 <= scores[k] <= 10.0 for k in ("BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L"))
    assert scores["examples"][0]["generated_text"]

    images = tmp_path / "images"
    images.mkdir()
    from sklearn.datasets import load_digits
    from PIL import Image

    digits = load_digits()
    for i in range(3):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((32, 32)).save(images / f"d{i}.png")
    capsys.readouterr()
    assert run_mindformer.main(["--config", DEMO, "--run_mode", "predict", "--predict_data", str(images),
                                "--load_checkpoint", full, "--output_dir", str(tmp_path / "pred")]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(str(images))]
    assert len(lines) == 3 and all(": " in l and l.split(": ", 1)[1] for l in lines)
