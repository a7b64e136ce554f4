"""Two data-parallel train steps of CoCa and of DeCLIP, without and with gradient accumulation
(2 micro-batches per rank), on this rank's part of a fixed global batch; run under msrun.
Saves, per family and setting, the losses and every parameter and state after the steps."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mindspore as ms  # noqa: E402

import mindclip  # noqa: E402
from declip_dp_worker import GLOBAL_BATCH, global_batch  # noqa: E402
from mindclip.config import load_config  # noqa: E402
from mindclip.families import family_of  # noqa: E402
from mindclip.families.declip_objective import DeCLIPObjective  # noqa: E402
from mindclip.losses import distributed_info  # noqa: E402


def coca_batch(model):
    rng = np.random.default_rng(7)
    size = model.image_size
    images = rng.standard_normal((GLOBAL_BATCH, 3, size, size)).astype(np.float32)
    words = ["cat", "dog", "red", "small", "photo", "tree", "on", "a", "the", "blue"]
    captions = [" ".join(rng.choice(words, int(rng.integers(1, 9)))) for _ in range(GLOBAL_BATCH)]
    return images, mindclip.get_tokenizer(model)(captions)


FAMILIES = {
    "coca": ("CoCa-Tiny-8", lambda m, rank, world: family_of(m).build_objective(m, load_config(), rank, world),
             coca_batch),
    "declip": ("DeCLIP-ViT-Tiny-32",
               lambda m, rank, world: DeCLIPObjective(m, {}, memory_size=64, rank=rank, world_size=world),
               global_batch),
}


def train_steps(family: str, rank: int, world: int, accum: int) -> dict:
    """Two steps of a fresh model (AdamW with eps 1: a gradient difference shows in the weights)."""
    from mindspore import nn

    from mindclip.training import AdamW, TrainStep

    name, make_objective, make_batch = FAMILIES[family]
    ms.set_seed(3)
    model = mindclip.create_model(name)
    model.set_train(True)
    objective = make_objective(model, rank, world)
    per_rank = GLOBAL_BATCH // world
    batch = [ms.Tensor(a[rank * per_rank:(rank + 1) * per_rank]) for a in make_batch(model)]
    optimizer = AdamW(model.trainable_params(), np.full(4, 1e-2, np.float32), weight_decay=0.1, eps=1.0)
    reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=world)
    step = TrainStep(objective, optimizer, accumulate_steps=accum, grad_reducer=reducer)
    losses = [[float(t.asnumpy()) for t in (out[0], *out[1])] for out in (step(*batch) for _ in range(2))]
    state = {p.name: p.asnumpy() for p in objective.get_parameters()}
    return {"losses": np.array(losses), **state}


def main(out_dir: str) -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    mindclip.set_num_threads(1)  # two ranks (and pytest's other worker) on two cores
    from mindspore.communication import init

    init()
    rank, world = distributed_info()
    for family in FAMILIES:
        for accum in (1, 2):
            np.savez(os.path.join(out_dir, f"{family}_rank{rank}_accum{accum}.npz"),
                     **train_steps(family, rank, world, accum))


if __name__ == "__main__":
    main(sys.argv[1])
