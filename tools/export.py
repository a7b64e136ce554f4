"""Export a model's image and text encoders to MindIR with a dynamic batch dimension.

    python tools/export.py --model ViT-B-32 --pretrained clip_vit_b_32.safetensors --output_dir mindir/
writes mindir/<name>_image_encoder.mindir and mindir/<name>_text_encoder.mindir; load them with
nn.GraphCell(mindspore.load(path)).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export_encoders(model, output_dir: str, name: str = "clip"):
    """Write both encoders (unnormalised features) and return their paths."""
    import mindspore as ms

    os.makedirs(output_dir, exist_ok=True)
    model.set_train(False)
    size = model.image_size
    image_spec = ms.Tensor(shape=[None, 3, size, size], dtype=ms.float32)
    text_spec = ms.Tensor(shape=[None, model.context_length], dtype=ms.int32)
    image_path = os.path.join(output_dir, f"{name}_image_encoder")
    text_path = os.path.join(output_dir, f"{name}_text_encoder")
    ms.export(model.visual, image_spec, file_name=image_path, file_format="MINDIR")
    ms.export(model.text, text_spec, file_name=text_path, file_format="MINDIR")
    return image_path + ".mindir", text_path + ".mindir"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="architecture name (default: from the checkpoint)")
    p.add_argument("--pretrained", default=None, help="converted weights (.ckpt/.safetensors/folder)")
    p.add_argument("--output_dir", required=True)
    args = p.parse_args(argv)
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    from mindclip import create_model

    model = create_model(args.model, pretrained=args.pretrained)
    name = (args.model or "clip").replace("/", "-")
    for path in export_encoders(model, args.output_dir, name):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
