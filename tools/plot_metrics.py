"""Plot a run's loss and learning-rate curves from its metrics.jsonl to PNG.

    python tools/plot_metrics.py output/demo_digits/metrics.jsonl [-o curves.png]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindclip.plots import plot_training_curves  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("metrics", help="metrics.jsonl written by a training run")
    p.add_argument("-o", "--output", default=None, help="PNG path (default: beside the metrics)")
    args = p.parse_args(argv)
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "training_curves.png")
    print(plot_training_curves(args.metrics, out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mindclip.errors import run_cli  # noqa: E402  (user errors: one line, exit 2)

    sys.exit(run_cli(main))
