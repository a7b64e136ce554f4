"""Training checkpoints: the model's, the optimizer's and the objective's Parameters (family
state such as a memory bank included) plus the run position, family and architecture,
written atomically, with keep-last-N and a ``latest`` pointer for ``--resume``. The model
part loads anywhere a converted file does (``create_model(pretrained=...)``)."""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, Iterable, Optional

import numpy as np

from ..models.weights_io import TRAIN_STATE_KEY as STATE_KEY
from ..models.weights_io import atomic_write, read_ckpt, write_ckpt

LATEST = "latest"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def save_training_checkpoint(output_dir: str, params: Iterable, state: Dict, keep: int = 3,
                             architecture: Optional[Dict[str, str]] = None) -> str:
    """Write ``step_<N>.ckpt`` (params: MindSpore Parameters, state: JSON-able position and
    RNG, architecture: the family/config metadata), point ``latest`` at it, then delete all
    but the newest ``keep``."""
    directory = checkpoint_dir(output_dir)
    os.makedirs(directory, exist_ok=True)
    name = f"step_{int(state['global_step']):08d}.ckpt"
    path = os.path.join(directory, name)
    tensors = {p.name: p.asnumpy() for p in params}
    write_ckpt(path, tensors, metadata={**(architecture or {}), STATE_KEY: json.dumps(state)})

    def write_pointer(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")

    atomic_write(os.path.join(directory, LATEST), write_pointer)
    if keep and keep > 0:
        existing = sorted(glob.glob(os.path.join(directory, "step_*.ckpt")))
        for old in existing[:-keep]:
            os.remove(old)
    return path


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint ``latest`` points at (falling back to the highest step on disk)."""
    directory = checkpoint_dir(output_dir)
    pointer = os.path.join(directory, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            path = os.path.join(directory, f.read().strip())
        if os.path.isfile(path):
            return path
    found = sorted(glob.glob(os.path.join(directory, "step_*.ckpt")),
                   key=lambda p: int(re.findall(r"(\d+)", os.path.basename(p))[0]))
    return found[-1] if found else None


def load_training_checkpoint(path: str, params: Iterable) -> Dict:
    """Restore every Parameter in ``params`` from ``path``; returns the saved run state.
    Missing or mis-shaped entries are an error naming them."""
    import mindspore as ms

    tensors, metadata = read_ckpt(path)
    params = list(params)
    missing = [p.name for p in params if p.name not in tensors]
    misshaped = [f"{p.name}: {tensors[p.name].shape} vs {tuple(p.shape)}" for p in params
                 if p.name in tensors and tuple(tensors[p.name].shape) != tuple(p.shape)]
    if missing or misshaped:
        raise ValueError(f"checkpoint {path} does not fit this run: missing {missing}, "
                         f"wrong shape {misshaped}")
    for p in params:
        p.set_data(ms.Tensor(np.asarray(tensors[p.name])).astype(p.dtype))
    if STATE_KEY not in metadata:
        raise ValueError(f"{path} is not a mindclip training checkpoint (no run state)")
    return json.loads(metadata[STATE_KEY])
