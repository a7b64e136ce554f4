"""mindclip's command line, in MindFormers' shape.

    python run_mindformer.py --config configs/demo/run_clip_tiny_digits.yaml --run_mode train
    python run_mindformer.py --config configs/clip/run_clip_vit_b_32_zero_shot_image_classification_cifar100.yaml \
        --run_mode eval --eval_dataset_dir /data/cifar-100-python --load_checkpoint clip_vit_b_32.ckpt
    msrun --worker_num 2 --local_worker_num 2 run_mindformer.py --config ... --run_mode train

Any config key can be overridden as ``--section.key value`` or ``--options section.key=value``.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    from mindclip.config import parse_value

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True, help="run config YAML (relative to the current dir)")
    p.add_argument("--run_mode", default="train", choices=("train", "finetune", "eval", "predict"))
    p.add_argument("--train_dataset_dir", default=None)
    p.add_argument("--eval_dataset_dir", default=None)
    p.add_argument("--predict_data", default=None, help="an image file or a folder of images")
    p.add_argument("--load_checkpoint", default=None, help="converted weights or a training checkpoint")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--device_target", default=None, choices=("CPU", "GPU", "Ascend"))
    p.add_argument("--mode", type=int, default=None, choices=(0, 1), help="0 GRAPH, 1 PYNATIVE")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--datasets", default=None, help="benchmark suite entries to run: wds/a,wds/b")
    p.add_argument("--dataset_root", default=None,
                   help="local copies of the suite's datasets, e.g. /data/wds_{dataset_cleaned}")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    p.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. optimizer.lr=1e-4 runner.epochs=2")
    args, rest = p.parse_known_args(argv)
    overrides = {}
    for item in args.options:
        if "=" not in item:
            p.error(f"--options takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value)
    i = 0
    while i < len(rest):  # dotted overrides: --optimizer.lr 1e-4 or --optimizer.lr=1e-4
        token = rest[i]
        if not token.startswith("--"):
            p.error(f"unexpected argument {token!r}")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(rest):
            value, i = rest[i + 1], i + 2
        else:
            p.error(f"{token} needs a value")
        overrides[key] = parse_value(value)
    for flag, key in (("train_dataset_dir", "train_dataset.path"), ("eval_dataset_dir", "eval_dataset.path"),
                      ("predict_data", "predict_data"), ("load_checkpoint", "load_checkpoint"),
                      ("output_dir", "output_dir"), ("device_target", "context.device_target"),
                      ("mode", "context.mode"), ("seed", "seed"), ("datasets", "suite.datasets"),
                      ("dataset_root", "suite.dataset_root")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.resume:
        overrides["resume"] = True
    overrides["run_mode"] = args.run_mode
    return args, overrides


def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    from mindclip.errors import run_cli

    return run_cli(lambda: _run(args, overrides), debug=args.debug)


def _run(args, overrides) -> int:
    from mindclip.config import load_config

    cfg = load_config(os.path.abspath(args.config), overrides)
    import mindspore as ms

    ctx = cfg["context"]
    ms.set_context(mode=int(ctx["mode"]), device_target=ctx["device_target"])
    if ctx["device_target"] != "CPU":
        ms.set_context(device_id=int(os.environ.get("DEVICE_ID", ctx["device_id"])))
    if ctx.get("threads"):
        from mindclip import set_num_threads

        set_num_threads(int(ctx["threads"]))  # MindSpore's kernels and ours
    from mindclip.memory_pool import set_memory_pool

    set_memory_pool(ctx.get("memory") or {}, ctx["device_target"])
    from mindclip.trainer import Trainer

    trainer = Trainer(config=cfg)
    mode = cfg["run_mode"]
    if mode in ("train", "finetune"):
        summary = trainer.train() if mode == "train" else trainer.finetune()
        if summary["rank"] == 0:
            print(json.dumps({"train": summary}))
            if trainer.config["eval_dataset"].get("type"):
                metrics = trainer.evaluate()
                print(json.dumps({"eval": _headline(metrics)}))
            from mindclip.plots import plot_training_curves

            out = trainer.config["output_dir"]
            written = [out + os.sep + " (model folder)"]
            if trainer.config["eval_dataset"].get("type"):
                written.append(os.path.join(out, "eval_metrics.json"))
            written.append(plot_training_curves(os.path.join(out, "metrics.jsonl"),
                                                os.path.join(out, "training_curves.png")))
            print("wrote " + ", ".join(written))
    elif mode == "eval":
        metrics = trainer.evaluate()
        out = trainer.config["output_dir"]
        if "suite" in metrics:
            from mindclip.evaluation.suite import format_table

            print(format_table(metrics["suite"]))
            print("wrote " + ", ".join(os.path.join(out, f) for f in ("results.jsonl", "results.csv", "results.png")))
        else:
            print(json.dumps(_headline(metrics), indent=2))
            print(f"wrote {os.path.join(out, 'eval_metrics.json')}")
    else:
        results = trainer.predict()
        data = cfg["predict_data"]
        from mindclip.data.classification import list_image_files

        names = list_image_files(data) if os.path.isdir(data) else [data]
        rows = results if isinstance(results[0], list) else [results]
        for name, row in zip(names, rows):
            if "generated_text" in row[0]:  # a model that writes text: its caption
                print(f"{name}: {row[0]['generated_text']}")
            else:
                print(name + ": " + ", ".join(f"{r['label']} ({r['score']:.3f})" for r in row))
    return 0


def _headline(metrics):
    """Metrics without the long per-class table, for the console."""
    return {k: (_headline(v) if isinstance(v, dict) and k != "per_class_top1" else v)
            for k, v in metrics.items() if k != "per_class_top1"}


if __name__ == "__main__":
    sys.exit(main())
