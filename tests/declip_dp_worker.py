"""DeCLIP's loss terms on one fixed global batch: the whole batch in one process, or this
rank's half under msrun (features gathered across ranks). Saves the terms and the memory."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindspore as ms  # noqa: E402

from mindclip import create_model, set_num_threads  # noqa: E402
from mindclip.families.declip_objective import DeCLIPObjective  # noqa: E402
from mindclip.losses import distributed_info  # noqa: E402

GLOBAL_BATCH = 8


def global_batch(model):
    rng = np.random.default_rng(5)
    size, ctx = model.image_size, model.context_length
    views = rng.standard_normal((2, GLOBAL_BATCH, 3, size, size)).astype(np.float32)
    tokens = np.zeros((2, GLOBAL_BATCH, ctx), np.int32)
    for t in tokens:
        for row in t:
            n = int(rng.integers(3, ctx - 2))
            row[0], row[1:n], row[n] = 49407, rng.integers(1, 49406, n - 1), 49408
    positions = np.tile(np.arange(1, 4, dtype=np.int32), (GLOBAL_BATCH, 1))
    targets = tokens[0][:, 1:4].copy()
    return views[0], views[1], tokens[0], positions, targets, tokens[1]


def main(out_dir: str) -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    set_num_threads(1)  # two ranks (and pytest's other worker) on two cores
    if os.environ.get("MS_WORKER_NUM"):
        from mindspore.communication import init

        init()
    rank, world = distributed_info()
    ms.set_seed(3)
    model = create_model("DeCLIP-ViT-Tiny-32")
    model.set_train(True)
    objective = DeCLIPObjective(model, {}, memory_size=64, rank=rank, world_size=world)
    per_rank = GLOBAL_BATCH // world
    batch = [ms.Tensor(a[rank * per_rank:(rank + 1) * per_rank]) for a in global_batch(model)]
    total, (clip, simsiam, mlm, nn_loss) = objective(*batch)
    np.savez(os.path.join(out_dir, f"terms_rank{rank}_of{world}.npz"), clip=clip.asnumpy(),
             nn=nn_loss.asnumpy(), bank=objective.memory.bank.asnumpy(),
             ptr=objective.memory.ptr.asnumpy())


if __name__ == "__main__":
    main(sys.argv[1])
