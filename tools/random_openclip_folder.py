"""Write an open_clip folder (``open_clip_config.json`` + ``open_clip_model.safetensors``) of
random weights for any open_clip architecture, one tensor at a time: what a full-size
conversion is measured on when the real weights cannot be downloaded (ViT-bigG-14: 10 GB).

    python tools/random_openclip_folder.py ViT-H-14 /tmp/vit_h_14
    /usr/bin/time -v python tools/convert_weight.py --torch_path /tmp/vit_h_14 --mindspore_path /tmp/h.safetensors

The names and shapes are open_clip's own (its model built on PyTorch's ``meta`` device, which
allocates nothing); needs the test extra (torch, open_clip_torch).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Random:
    """A tensor of normal draws made when it is written (shape and dtype known before)."""

    def __init__(self, shape, seed: int):
        self.shape, self.dtype, self.seed = tuple(shape), np.dtype(np.float32), seed

    def __array__(self, dtype=None, copy=None):
        draws = np.random.default_rng(self.seed).standard_normal(self.shape, dtype=np.float32)
        return np.asarray(draws * np.float32(0.02), dtype=dtype or np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an open_clip architecture name (ViT-H-14, ViT-bigG-14, ...)")
    p.add_argument("output", help="the folder to write")
    args = p.parse_args(argv)
    import open_clip
    import torch

    sys.path.insert(0, ROOT)
    from mindclip.models.weights_io import write_safetensors

    if args.model not in open_clip.list_models():
        print(f"error: {args.model!r} is not an open_clip architecture", file=sys.stderr)
        return 2
    with torch.device("meta"):
        model = open_clip.create_model(args.model, device="meta")
    state = {name: _Random(t.shape, i) for i, (name, t) in enumerate(model.state_dict().items())}
    os.makedirs(args.output, exist_ok=True)
    write_safetensors(os.path.join(args.output, "open_clip_model.safetensors"), state)
    with open(os.path.join(args.output, "open_clip_config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_cfg": open_clip.get_model_config(args.model), "preprocess_cfg": {}}, f, indent=2)
    size = os.path.getsize(os.path.join(args.output, "open_clip_model.safetensors"))
    print(f"wrote {args.output}: {len(state)} tensors, {size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
