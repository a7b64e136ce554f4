"""Command line of ``tools/convert_weight.py``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .converter import SOURCES, convert_checkpoint, export_to_openclip, save_converted
from .infer import matching_model_names


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert CLIP checkpoints from PyTorch (OpenAI, open_clip, Hugging Face, "
                    "MindFormers 1.x .ckpt) to MindSpore, or back with --reverse.")
    p.add_argument("--torch_path", required=True,
                   help="PyTorch side: source file/folder, or the output with --reverse "
                        "(.safetensors file, or a folder in open_clip's local-dir layout)")
    p.add_argument("--mindspore_path", required=True,
                   help="MindSpore side: output .ckpt/.safetensors (or a folder), or the "
                        "input with --reverse")
    p.add_argument("--model", default=None, help="architecture name (default: from the source)")
    p.add_argument("--src", default="auto", choices=SOURCES, help="source layout (default: detect)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--quick_gelu", type=_bool, default=None,
                   help="activation of a plain state dict that does not record it")
    p.add_argument("--allow_torchscript", action="store_true",
                   help="allow opening TorchScript archives (they can execute code)")
    p.add_argument("--reverse", action="store_true",
                   help="convert a mindclip checkpoint to an open_clip state dict")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.reverse:
            out = export_to_openclip(args.mindspore_path, args.torch_path, args.model)
            print(f"wrote open_clip state dict {out}")
            return 0
        tensors, config = convert_checkpoint(args.torch_path, src=args.src, model_name=args.model,
                                             quick_gelu=args.quick_gelu,
                                             allow_torchscript=args.allow_torchscript)
        out = save_converted(tensors, config, args.mindspore_path, dtype=args.dtype,
                             source=args.src)
    except (ValueError, FileNotFoundError, PermissionError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = matching_model_names(config) or ["custom architecture"]
    n_params = sum(int(v.size) for v in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n_params / 1e6:.1f}M values, {args.dtype}, "
          f"architecture {', '.join(names)} (quick_gelu={config.quick_gelu}); "
          "verified against the model: no missing, unexpected or mis-shaped weights")
    return 0
