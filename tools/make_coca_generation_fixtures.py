"""Rebuild ``tests/fixtures/coca_generation/``: token ids that open_clip 3.3's
``CoCa.generate`` (beam search) writes for a small random CoCa, the reference for
``tests/test_coca.py``.

open_clip's beam search needs Hugging Face's ``BeamSearchScorer``, which transformers 5 (the
test extra) no longer has, so this runs in a separate environment:

    python3 -m venv /tmp/coca-ref
    /tmp/coca-ref/bin/pip install torch==2.14.1 torchvision==0.29.1 open_clip_torch==3.3.0 \\
        transformers==4.55.4 "numpy<2" safetensors
    /tmp/coca-ref/bin/python tools/make_coca_generation_fixtures.py

The model is open_clip's ``coca_ViT-B-32`` shrunk (two layers and two heads of width 64 per
tower, 64-pixel images, a 100-token vocabulary with start 98 and end 99, so that beams end
often), every parameter moved off its initial value; its weights, the images and, per case,
the arguments and the ids are written.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "coca_generation")
SOT, EOS, VOCAB = 98, 99, 100

CASES = [
    {"num_beams": 6, "num_beam_groups": 3},
    {"num_beams": 3, "num_beam_groups": 1},
    {"num_beams": 6, "num_beam_groups": 1, "min_seq_len": 10},
    {"num_beams": 3, "num_beam_groups": 3, "seq_len": 12},
    {"num_beams": 6, "num_beam_groups": 3, "fixed_output_length": True, "seq_len": 20},
    {"num_beams": 6, "num_beam_groups": 2, "repetition_penalty": 1.5, "min_seq_len": 2},
]


def tiny_config() -> dict:
    import open_clip

    path = os.path.join(os.path.dirname(open_clip.__file__), "model_configs", "coca_ViT-B-32.json")
    with open(path) as f:
        cfg = copy.deepcopy(json.load(f))
    cfg["embed_dim"] = 64
    cfg["vision_cfg"].update(layers=2, width=128, image_size=64, attn_pooler_heads=2)
    cfg["text_cfg"].update(layers=2, width=64, heads=1, vocab_size=VOCAB)
    cfg["multimodal_cfg"].update(layers=2, width=64, heads=1, vocab_size=VOCAB, attn_pooler_heads=2)
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=OUT, help="fixture folder (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        import open_clip
        import torch
        import transformers
        from safetensors.torch import save_file
    except ImportError as exc:
        p.error(f"{exc.name} is not installed; see this script's docstring for the environment")
    if int(transformers.__version__.split(".")[0]) >= 5:
        p.error(f"transformers {transformers.__version__} has no BeamSearchScorer, which "
                "open_clip's CoCa.generate needs: run this in an environment with "
                "transformers 4.55.4 (see this script's docstring)")

    cfg = tiny_config()
    open_clip.factory._MODEL_CONFIGS["coca-tiny-fixture"] = cfg
    torch.manual_seed(0)
    model = open_clip.create_model("coca-tiny-fixture").eval()
    # open_clip 3.3 leaves the decoder's text_projection as torch.empty (its init_parameters
    # is never called, and fails if called): initialise it as that method means to, so the weights are reproducible
    torch.nn.init.normal_(model.text_decoder.text_projection, std=model.text_decoder.width ** -0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        # a visible end token, so that beams finish at different lengths
        model.text_decoder.text_projection[:, EOS] *= 3.0
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cases = []
    for args in CASES:
        kwargs = dict({"seq_len": 30, "min_seq_len": 5}, **args)
        with torch.no_grad():
            ids = model.generate(images, sot_token_id=SOT, eos_token_id=EOS, **kwargs)
        cases.append({"args": kwargs, "ids": ids.tolist()})
        print(kwargs, [len(r) for r in ids.tolist()], file=sys.stderr)
    out = args.output
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    np.save(os.path.join(out, "images.npy"), images.numpy())
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"model_cfg": cfg, "sot": SOT, "eos": EOS, "open_clip": open_clip.__version__,
                   "transformers": transformers.__version__, "torch": torch.__version__,
                   "cases": cases}, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
