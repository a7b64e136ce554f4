"""Training checkpoints: the model's, the optimizer's and the objective's Parameters (family
state such as a memory bank included) plus the run position, family and architecture,
written atomically with a checksum of their tensors, read back and verified before ``latest``
points at them or an older one is deleted (keep-last-N). ``--resume`` takes the newest one that
verifies. The model part loads anywhere a converted file does (``create_model(pretrained=...)``)."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import StorageError
from ..models.rng import is_rng_state
from ..models.weights_io import TRAIN_STATE_KEY as STATE_KEY
from ..models.weights_io import CkptReader, CorruptCheckpointError, atomic_write, verify_ckpt, write_ckpt

LATEST = "latest"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def _step(path: str) -> int:
    return int(re.findall(r"(\d+)", os.path.basename(path))[0])


def _on_disk(directory: str) -> List[str]:
    return sorted(glob.glob(os.path.join(directory, "step_*.ckpt")), key=_step)


def storage_error(path: str, exc: OSError) -> StorageError:
    """The failure of a write, in the user's terms: the path, the reason and the free space."""
    probe = os.path.dirname(os.path.abspath(path))
    while probe and not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    try:
        free = f"{shutil.disk_usage(probe).free / 1e9:.2f} GB free on {probe}"
    except OSError:
        free = "free space unknown"
    error = StorageError(f"cannot write {path}: {exc.strerror or exc} ({free}); the previous "
                         "checkpoint and the model folder are unchanged")
    error.errno = exc.errno
    return error


def save_training_checkpoint(output_dir: str, params: Iterable, state: Dict, keep: int = 3,
                             architecture: Optional[Dict[str, str]] = None) -> str:
    """Write ``step_<N>.ckpt`` (params: MindSpore Parameters, state: JSON-able position and
    RNG, architecture: the family/config metadata), read it back and verify it, then point
    ``latest`` at it and delete all but the newest ``keep``. A write that fails (full disk,
    no permission) or a file that does not verify raises :class:`StorageError` with
    ``latest`` and every earlier checkpoint as they were."""
    directory = checkpoint_dir(output_dir)
    name = f"step_{int(state['global_step']):08d}.ckpt"
    path = os.path.join(directory, name)
    tensors = {p.name: p for p in params}  # fetched one at a time by the writer
    try:
        os.makedirs(directory, exist_ok=True)
        write_ckpt(path, tensors, metadata={**(architecture or {}), STATE_KEY: json.dumps(state)})
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        verify_ckpt(path)  # what resume will read must verify before anything trusts it
    except CorruptCheckpointError as exc:
        os.remove(path)
        raise StorageError(f"the checkpoint just written does not read back intact ({exc}); "
                           "the previous checkpoint is kept") from None

    def write_pointer(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")

    try:
        atomic_write(os.path.join(directory, LATEST), write_pointer)
    except OSError as exc:
        raise storage_error(os.path.join(directory, LATEST), exc) from None
    if keep and keep > 0:
        for old in _on_disk(directory)[:-keep]:
            os.remove(old)
    return path


def candidate_checkpoints(output_dir: str) -> List[str]:
    """Checkpoints to resume from, best first: the one ``latest`` points at, then the others
    newest first (``latest`` may be missing, or point at a damaged file)."""
    directory = checkpoint_dir(output_dir)
    found = list(reversed(_on_disk(directory)))
    pointer = os.path.join(directory, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            target = os.path.join(directory, f.read().strip())
        if target in found:
            found.remove(target)
            found.insert(0, target)
    return found


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint ``latest`` points at (falling back to the highest step on disk)."""
    found = candidate_checkpoints(output_dir)
    return found[0] if found else None


def read_resumable(output_dir: str) -> Tuple[Optional[str], Optional[Dict[str, str]], List[str]]:
    """``(path, metadata, skipped)`` of the newest checkpoint that verifies (read in chunks:
    no tensor is held); ``skipped`` says which were passed over and why. ``(None, None, [])``
    when there is none at all; an error naming every file when none of them is intact."""
    skipped = []
    candidates = candidate_checkpoints(output_dir)
    for path in candidates:
        try:
            metadata = verify_ckpt(path)
        except CorruptCheckpointError as exc:
            skipped.append(f"skipped {os.path.basename(path)}: {exc}")
            continue
        if STATE_KEY not in metadata:
            skipped.append(f"skipped {os.path.basename(path)}: no run state (not a training checkpoint)")
            continue
        return path, metadata, skipped
    if candidates:
        raise ValueError(f"--resume: no intact checkpoint in {checkpoint_dir(output_dir)}: "
                         + "; ".join(skipped))
    return None, None, []


def restore(path: str, metadata: Dict[str, str], params: Iterable) -> Tuple[Dict, List[str]]:
    """Set every Parameter in ``params`` from the checkpoint :func:`read_resumable` chose, one
    tensor at a time; returns the saved run state and notes for the log. Missing or
    mis-shaped weights are an error naming them; missing draw states (a checkpoint written
    before they were saved) keep their seeded values, and a note says the run is then not
    exactly the uninterrupted one."""
    import mindspore as ms

    params = list(params)
    with CkptReader(path) as ckpt:
        absent = [p.name for p in params if p.name not in ckpt.shapes]
        fresh = {name for name in absent if is_rng_state(name)}
        missing = [name for name in absent if name not in fresh]
        misshaped = [f"{p.name}: {ckpt.shapes[p.name]} vs {tuple(p.shape)}" for p in params
                     if p.name in ckpt.shapes and tuple(ckpt.shapes[p.name]) != tuple(p.shape)]
        if missing or misshaped:
            raise ValueError(f"checkpoint {path} does not fit this run: missing {missing}, "
                             f"wrong shape {misshaped}")
        for p in params:
            if p.name not in fresh:
                p.set_data(ms.Tensor(ckpt.read(p.name)).astype(p.dtype))
    notes = [f"{os.path.basename(path)} holds no draw state for {len(fresh)} stochastic layer(s) "
             "(it was written before draw states were saved): their drop path / dropout draws "
             "start anew, so from here the run differs from an uninterrupted one"] if fresh else []
    return json.loads(metadata[STATE_KEY]), notes
