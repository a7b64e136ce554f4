"""Write a randomly initialised dual encoder (CLIP ViT + BERT text tower) as a model folder that
every front door loads: weights, config and a WordPiece tokenizer trained here on a caption
dataset's captions with the `tokenizers` library (or an existing tokenizer folder).

    python tools/init_dual_encoder.py --output output/dual_encoder_tiny_init     # the digits demo
    python tools/init_dual_encoder.py --output my_init --tokenizer bert-base-uncased/ \
        --vision ViT-B-32 --hidden_size 768 --layers 12 --heads 12 --max_seq_length 128

For a pretrained starting point use tools/convert_weight.py --vision_path/--text_path instead.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(captions, vocab_size: int, folder: str) -> str:
    """A lower-cased BERT WordPiece tokenizer folder (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(captions, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL)
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "pad_token": "[PAD]",
                   "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]"}, f, indent=2)
    return folder


def build(args) -> str:
    import mindspore as ms

    from mindclip import get_model_config
    from mindclip.convert import save_converted
    from mindclip.data import build_source
    from mindclip.families import get_family
    from mindclip.tokenizer import HFTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        if args.tokenizer:
            tok_dir = args.tokenizer
        else:
            source = build_source({"type": args.train_tokenizer_on, "split": "train",
                                   "path": args.captions_path})
            captions = [c for caps in source.captions for c in caps]
            tok_dir = train_wordpiece(captions, args.vocab_size, os.path.join(tmp, "tokenizer"))
        tokenizer = HFTokenizer(tok_dir, args.max_seq_length)
        vision = get_model_config(args.vision)
        config = {
            "projection_dim": args.projection_dim, "vision_quick_gelu": vision.quick_gelu,
            "vision_cfg": vision.to_dict()["vision_cfg"], "max_seq_length": args.max_seq_length,
            "text_cfg": {"model_type": "bert", "vocab_size": tokenizer.vocab_size,
                         "hidden_size": args.hidden_size, "num_hidden_layers": args.layers,
                         "num_attention_heads": args.heads, "intermediate_size": 4 * args.hidden_size,
                         "max_position_embeddings": max(args.max_seq_length, 16),
                         "type_vocab_size": 2, "layer_norm_eps": 1e-12,
                         "pad_token_id": tokenizer.pad_token_id}}
        family = get_family("dual_encoder")
        ms.set_seed(args.seed)
        model = family.build_model(config)
        tensors = {k: p.asnumpy() for k, p in model.parameters_dict().items()}
        return save_converted(tensors, model.config, args.output, source="init",
                              family=family.name, assets=tok_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="model folder to write")
    p.add_argument("--tokenizer", default=None, help="an existing HF tokenizer folder")
    p.add_argument("--train_tokenizer_on", default="digits_captions",
                   help="caption dataset type whose train captions train the WordPiece vocabulary")
    p.add_argument("--captions_path", default=None, help="that dataset's path (digits: none)")
    p.add_argument("--vocab_size", type=int, default=120)
    p.add_argument("--vision", default="ViT-Tiny-8", help="CLIP architecture of the image tower")
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--max_seq_length", type=int, default=16)
    p.add_argument("--projection_dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    args = p.parse_args(argv)
    from mindclip.errors import run_cli

    def run() -> int:
        print(f"wrote {build(args)} (+ config.json and tokenizer files beside it)")
        return 0

    return run_cli(run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
