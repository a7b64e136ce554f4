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
    """Write both encoders of a model of any family (``encode_image`` / ``encode_text``,
    unnormalised features) and return their paths. The text encoder's inputs are what the
    family's text processor produces (CLIP: token ids; BERT-style: ids + attention mask)."""
    import mindspore as ms
    from mindspore import nn

    from mindclip import get_tokenizer
    from mindclip.families import split_text_inputs
    from mindclip.models.cpu_kernels import portable

    class ImageEncoder(nn.Cell):
        def __init__(self, inner):
            super().__init__(auto_prefix=False)
            self.inner = inner

        def construct(self, images):
            return self.inner.image_features(images)

    class TextEncoder(ImageEncoder):
        def construct(self, *text):
            return self.inner.text_features(*text)

    os.makedirs(output_dir, exist_ok=True)
    model.set_train(False)
    size = model.image_size
    image_spec = ms.Tensor(shape=[None, 3, size, size], dtype=ms.float32)
    example = split_text_inputs(get_tokenizer(model)(["a photo"]))
    text_specs = [ms.Tensor(shape=[None, *x.shape[1:]], dtype=ms.int32) for x in example]
    image_path = os.path.join(output_dir, f"{name}_image_encoder")
    text_path = os.path.join(output_dir, f"{name}_text_encoder")
    with portable(model):  # the machine-built CPU kernels do not travel with a MindIR
        ms.export(ImageEncoder(model), image_spec, file_name=image_path, file_format="MINDIR")
        ms.export(TextEncoder(model), *text_specs, file_name=text_path, file_format="MINDIR")
    return image_path + ".mindir", text_path + ".mindir"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="architecture name (default: from the checkpoint)")
    p.add_argument("--pretrained", default=None,
                   help="converted weights (.ckpt/.safetensors/folder; default: those installed "
                        "under --model)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    args = p.parse_args(argv)
    from mindclip.errors import run_cli

    def run() -> int:
        import mindspore as ms

        ms.set_context(mode=ms.GRAPH_MODE)
        from mindclip import create_model

        # a bare name means its installed weights (never a random model)
        model = create_model(args.model, pretrained=args.pretrained or bool(args.model))
        name = (args.model or "model").replace("/", "-")
        for path in export_encoders(model, args.output_dir, name):
            print(f"wrote {path}")
        return 0

    return run_cli(run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
