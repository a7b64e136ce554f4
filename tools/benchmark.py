"""Throughput of mindclip next to open_clip (PyTorch CPU) in one run, and of the data pipelines
next to a plain PIL + numpy loop.

    python tools/benchmark.py --model ViT-B-32 --iters 3            # models
    python tools/benchmark.py --section data --images /path/jpegs   # data (default: generated JPEGs)

fp32 throughout. Numbers are items per second (higher is better), after one warm-up call.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _progress(who: str, key: str, out: dict) -> None:
    print(f"  measured {who} {key}: {out[key]:.1f}/s", file=sys.stderr, flush=True)


def _timeit(fn, iters: int) -> float:
    fn()  # warm-up (graph compilation)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def bench_mindclip(name: str, iters: int, image_batch: int, text_batch: int, train_batch: int):
    import mindspore as ms

    from mindclip import create_model
    from mindclip.losses import ClipLoss
    from mindclip.training import AdamW, TrainStep

    ms.set_context(mode=ms.GRAPH_MODE)
    model = create_model(name)
    size, ctx = model.image_size, model.context_length
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((image_batch, 3, size, size)).astype(np.float32))
    texts = ms.Tensor(rng.integers(1, 49000, (text_batch, ctx)).astype(np.int32))
    out = {"image_encode": image_batch / _timeit(lambda: model.encode_image(images).asnumpy(), iters)}
    _progress("mindclip", "image_encode", out)
    out["text_encode"] = text_batch / _timeit(lambda: model.encode_text(texts).asnumpy(), iters)
    _progress("mindclip", "text_encode", out)
    model.set_train(True)
    opt = AdamW(model.trainable_params(), np.full(1000, 1e-5, np.float32))
    step = TrainStep(model, ClipLoss(rank=0, world_size=1), opt)
    timgs = ms.Tensor(rng.standard_normal((train_batch, 3, size, size)).astype(np.float32))
    ttxt = ms.Tensor(rng.integers(1, 49000, (train_batch, ctx)).astype(np.int32))
    out["train_step"] = train_batch / _timeit(lambda: step(timgs, ttxt)[0].asnumpy(), iters)
    _progress("mindclip", "train_step", out)
    return out


def bench_open_clip(name: str, iters: int, image_batch: int, text_batch: int, train_batch: int):
    import open_clip
    import torch

    from mindclip import get_model_config

    cfg = get_model_config(name).to_dict()
    model = open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                                 text_cfg=cfg["text_cfg"], quick_gelu=cfg["quick_gelu"]).eval()
    size, ctx = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    images = torch.randn(image_batch, 3, size, size)
    texts = torch.randint(1, 49000, (text_batch, ctx))
    with torch.no_grad():
        out = {"image_encode": image_batch / _timeit(lambda: model.encode_image(images), iters),
               "text_encode": text_batch / _timeit(lambda: model.encode_text(texts), iters)}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = open_clip.loss.ClipLoss()
    timgs = torch.randn(train_batch, 3, size, size)
    ttxt = torch.randint(1, 49000, (train_batch, ctx))

    def step():
        opt.zero_grad()
        loss = loss_fn(*model(timgs, ttxt))
        loss.backward()
        opt.step()

    out["train_step"] = train_batch / _timeit(step, iters)
    return out, torch.get_num_threads()


def _sample_jpegs(directory: str, count: int):
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    for i in range(count):
        img = Image.fromarray(photos[i % len(photos)]).resize((500, 375))
        img.rotate(i % 7).save(os.path.join(directory, f"{i:05d}.jpg"), quality=90)


def bench_data(folder: str, batch: int, workers: int):
    from mindclip.data.base import ImageTextSource
    from mindclip.data.classification import list_image_files
    from mindclip.data.loader import eval_image_loader, train_loader
    from mindclip.data.transforms import image_transform
    from mindclip.tokenizer import CLIPTokenizer

    files = list_image_files(folder)
    source = ImageTextSource(files, [[f"a photo number {i}"] for i in range(len(files))])
    tf = image_transform(224)

    def plain():
        for start in range(0, len(files), batch):
            np.stack([tf(f) for f in files[start:start + batch]])

    def run(loader_fn):
        def go():
            n = 0
            for images, _ in loader_fn():
                n += len(images)
            return n
        return go

    tok = CLIPTokenizer()
    rates = {"plain PIL+numpy loop": len(files) / _timeit(plain, 1)}
    for w in sorted({1, workers}):
        rates[f"train pipeline, {w} worker(s)"] = len(files) // batch * batch / _timeit(
            run(lambda: train_loader(source, tok, 224, batch, num_workers=w)), 1)
        rates[f"eval pipeline, {w} worker(s)"] = len(files) / _timeit(
            run(lambda: eval_image_loader(source, 224, batch, num_workers=w)), 1)
    return rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", choices=("models", "data", "all"), default="all")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--image_batch", type=int, default=32)
    p.add_argument("--text_batch", type=int, default=256)
    p.add_argument("--train_batch", type=int, default=32)
    p.add_argument("--images", default=None, help="folder of JPEGs (default: 1000 generated)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    results = {"threads": os.cpu_count()}
    if args.section in ("models", "all"):
        ours = bench_mindclip(args.model, args.iters, args.image_batch, args.text_batch, args.train_batch)
        try:
            theirs, torch_threads = bench_open_clip(args.model, args.iters, args.image_batch,
                                                    args.text_batch, args.train_batch)
        except ImportError:
            theirs, torch_threads = None, None
        print(f"\n{args.model}, fp32, CPU with {os.cpu_count()} cores "
              f"(MindSpore default threads; torch threads: {torch_threads})")
        print(f"{'workload':34s} {'mindclip (MindSpore)':>22s} {'open_clip (PyTorch)':>22s}")
        labels = {"image_encode": f"image encode, batch {args.image_batch} [img/s]",
                  "text_encode": f"text encode, {args.text_batch}x77 [txt/s]",
                  "train_step": f"train step, batch {args.train_batch} [samples/s]"}
        for key, label in labels.items():
            other = f"{theirs[key]:22.1f}" if theirs else f"{'(not installed)':>22s}"
            print(f"{label:34s} {ours[key]:22.1f} {other}")
        results["models"] = {"model": args.model, "mindclip": ours, "open_clip": theirs}
    if args.section in ("data", "all"):
        folder = args.images
        tmp = None
        if folder is None:
            tmp = tempfile.TemporaryDirectory()
            folder = tmp.name
            _sample_jpegs(folder, 1000)
        rates = bench_data(folder, 32, args.workers)
        print(f"\ndata: {folder} -> 224x224, batch 32 [img/s]")
        for name, rate in rates.items():
            print(f"{name:34s} {rate:10.1f}")
        results["data"] = rates
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
