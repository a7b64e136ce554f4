"""Command line of ``tools/convert_weight.py``: every registered family's converters, the
source layout detected, the result verified against a model of the architecture."""
from __future__ import annotations

import argparse
from typing import Any, Iterator, List, Optional

from ..errors import run_cli
from ..families.base import family_for_config, get_family
from ..registry import names
from .converter import SOURCES, save_converted
from .infer import matching_model_names
from .sources import SourceCheckpoint, read_source


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def converters() -> Iterator[Any]:
    """Every registered family's converters, CLIP's first (the fallback that names what a
    checkpoint lacks when no converter recognises it)."""
    for name in sorted(names("family"), key=lambda n: n != "clip"):
        yield from get_family(name).converters


def find_converter(source: SourceCheckpoint, src: str = "auto") -> Any:
    """The converter that recognises ``source``: the other families' first (their layouts
    are narrower), CLIP's last and as the fallback."""
    candidates = [c for c in converters() if src == "auto" or src in c.sources]
    for conv in candidates[1:] + candidates[:1]:
        if conv.detect(source):
            return conv
    return candidates[0]  # its convert() raises with the reason it cannot read the source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert checkpoints from PyTorch (OpenAI, open_clip, Hugging Face CLIP and "
                    "VisionTextDualEncoder folders, MindFormers 1.x .ckpt) to MindSpore, or back "
                    "with --reverse; or assemble a new dual encoder (--vision_path/--text_path).")
    p.add_argument("--torch_path", default=None,
                   help="PyTorch side: source file/folder, or the output with --reverse "
                        "(.safetensors file, or a folder)")
    p.add_argument("--mindspore_path", default=None,
                   help="MindSpore side: output .ckpt/.safetensors (or a folder), or the "
                        "input with --reverse")
    p.add_argument("--install", default=None, metavar="NAME",
                   help="write into the local weight store ($MINDCLIP_HOME/NAME/) so that every "
                        "front door loads the model by NAME (e.g. clip_vit_b_32)")
    p.add_argument("--model", default=None, help="architecture name (default: from the source)")
    p.add_argument("--src", default="auto", choices=SOURCES, help="source layout (default: detect)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--quick_gelu", type=_bool, default=None,
                   help="activation of a plain state dict that does not record it")
    p.add_argument("--allow_torchscript", action="store_true",
                   help="allow opening TorchScript archives (they can execute code)")
    p.add_argument("--reverse", action="store_true",
                   help="convert a mindclip checkpoint back: CLIP to an open_clip state dict, a "
                        "dual encoder to a Hugging Face folder")
    p.add_argument("--reverse_layout", default=None, choices=("open_clip", "hf"),
                   help="with --reverse on a SigLIP model: open_clip's folder (default) or a "
                        "Hugging Face SiglipModel folder")
    p.add_argument("--vision_path", default=None,
                   help="with --text_path: a Hugging Face CLIP folder whose vision tower starts a "
                        "new dual encoder (run_clip.py's from_vision_text_pretrained)")
    p.add_argument("--text_path", default=None, help="a Hugging Face BERT/RoBERTa folder")
    p.add_argument("--towers_only", action="store_true",
                   help="DeCLIP: write a CLIP-family inference file (towers only, OpenAI token "
                        "ids) instead of keeping the training heads")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    p.add_argument("--projection_dim", type=int, default=512,
                   help="with --vision_path/--text_path: size of the new projections")
    return p


def _run(args: argparse.Namespace) -> str:
    if args.install:
        from ..models.store import store_path

        if args.reverse:
            raise ValueError("--install writes converted weights; it does not go with --reverse")
        if args.mindspore_path:
            raise ValueError("give --install NAME or --mindspore_path, not both")
        args.mindspore_path = store_path(args.install)
    if not args.mindspore_path:
        raise ValueError("--mindspore_path (or --install NAME) is required")
    if args.vision_path or args.text_path:
        if not (args.vision_path and args.text_path):
            raise ValueError("--vision_path and --text_path go together")
        conv = next(c for c in converters() if hasattr(c, "assemble"))
        tensors, config = conv.assemble(args.vision_path, args.text_path, args.projection_dim)
        out = save_converted(tensors, config, args.mindspore_path, dtype=args.dtype,
                             source="assembled", family=conv.family, assets=args.text_path)
        return f"wrote {out}: a new dual encoder ({args.vision_path} vision tower, " \
               f"{args.text_path} text model and tokenizer, new projections)"
    if not args.torch_path:
        raise ValueError("--torch_path is required")
    if args.reverse:
        from ..factory import read_checkpoint_config

        arch = read_checkpoint_config(args.mindspore_path)
        family = arch[0] if arch else get_family("clip")  # files without a record are CLIP's
        reverse = next((c.reverse for c in family.converters if hasattr(c, "reverse")), None)
        if reverse is None:
            raise ValueError(f"the {family.name!r} family has no reverse conversion")
        layout = {"layout": args.reverse_layout} if args.reverse_layout else {}
        return f"wrote {reverse(args.mindspore_path, args.torch_path, model_name=args.model, **layout)}"
    source = read_source(args.torch_path, allow_torchscript=args.allow_torchscript)
    conv = find_converter(source, args.src)
    options = {"towers_only": True} if args.towers_only else {}
    if args.towers_only and "declip" not in conv.sources:
        raise ValueError(f"--towers_only applies to DeCLIP checkpoints; {args.torch_path} is a "
                         f"{conv.family} checkpoint")
    tensors, config = conv.convert(source, src=args.src, model_name=args.model,
                                   quick_gelu=args.quick_gelu, **options)
    family = family_for_config(config)
    assets = conv.assets(source) if hasattr(conv, "assets") else None
    out = save_converted(tensors, config, args.mindspore_path, dtype=args.dtype,
                         source=args.src, family=family.name, assets=assets,
                         preprocess=source.preprocess)
    n_params = sum(int(v.size) for v in tensors.values())
    arch = ", ".join(matching_model_names(config) or ["custom architecture"])
    activation = f" (quick_gelu={config.quick_gelu})" if hasattr(config, "quick_gelu") else ""
    return (f"wrote {out}: {family.name} family, {len(tensors)} tensors, {n_params / 1e6:.1f}M "
            f"values, {args.dtype}, architecture {arch}{activation}; verified against the model: "
            "no missing, unexpected or mis-shaped weights")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        print(_run(args))
        return 0

    return run_cli(run, debug=args.debug)
