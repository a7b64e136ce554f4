"""Training checkpoints: every trainable and optimizer Parameter plus the run position,
written atomically, with keep-last-N and a ``latest`` pointer for ``--resume``."""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..models.weights_io import atomic_write, read_ckpt, write_ckpt

LATEST = "latest"
STATE_KEY = "mindclip_train_state"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def save_training_checkpoint(output_dir: str, params: Iterable, state: Dict, keep: int = 3) -> str:
    """Write ``step_<N>.ckpt`` (params: MindSpore Parameters, state: JSON-able position and
    RNG), point ``latest`` at it, then delete all but the newest ``keep``."""
    directory = checkpoint_dir(output_dir)
    os.makedirs(directory, exist_ok=True)
    name = f"step_{int(state['global_step']):08d}.ckpt"
    path = os.path.join(directory, name)
    tensors = {p.name: p.asnumpy() for p in params}
    write_ckpt(path, tensors, metadata={STATE_KEY: json.dumps(state)})

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


def split_model_weights(path: str) -> Tuple[Dict[str, np.ndarray], Dict]:
    """Model weights of a training checkpoint (optimizer state dropped) and its run state."""
    tensors, metadata = read_ckpt(path)
    weights = {k: v for k, v in tensors.items()
               if not k.startswith(("adam_m.", "adam_v.")) and k not in ("global_step", "logit_bias")}
    return weights, json.loads(metadata.get(STATE_KEY, "{}"))
