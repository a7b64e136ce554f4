"""Trains a few steps and saves this rank's parameters; run directly or under msrun."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindspore as ms  # noqa: E402

from mindclip import set_num_threads  # noqa: E402
from mindclip.trainer import Trainer  # noqa: E402


def main(out_dir: str, per_rank_batch: int) -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    set_num_threads(1)  # two ranks (and pytest's other worker) on two cores
    cfg = {
        "seed": 3, "output_dir": out_dir, "model": {"name": "ViT-Tiny-8"},
        "train_dataset": {"type": "digits_captions", "num_samples": 48, "num_workers": 1},
        # A fine-tuning-sized lr: Adam moves near-zero-gradient weights by ~lr whatever the
        # summation order, so a larger lr would measure fp32 noise, not the parallel logic.
        "optimizer": {"lr": 1e-5},
        "runner": {"epochs": 1, "batch_size": per_rank_batch, "progress_bar": False,
                   "log_interval": 1},
    }
    trainer = Trainer(config=cfg)
    summary = trainer.train()
    params = {k: p.asnumpy() for k, p in trainer.model.parameters_dict().items()}
    np.savez(os.path.join(out_dir, f"params_rank{summary['rank']}_of{summary['world_size']}.npz"),
             **params)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
